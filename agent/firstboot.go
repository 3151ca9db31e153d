package agent

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/metadata"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/userdata"
)

// firstBootFiles are the files a new disk of server s gets before its
// first boot: what Capsule's base image init runs of its user data
// (package userdata: executable, root's), and, with a config drive, the
// server's metadata tree, read-only (0444), under metadata.ConfigDriveDir,
// fetched from the control plane as the metadata service serves it.
func (a *Agent) firstBootFiles(ctx context.Context, s protocol.InstanceSpec) ([]drivers.File, error) {
	var files []drivers.File
	plan, err := userdata.Decode(s.UserData)
	if err != nil {
		return nil, err
	}
	if plan.Boot != "" {
		files = append(files, drivers.File{Path: userdata.Boot, Mode: 0o700, Content: []byte(plan.Boot)})
	}
	if plan.Once != "" {
		files = append(files, drivers.File{Path: userdata.Once, Mode: 0o700, Content: []byte(plan.Once)})
	}
	if !s.ConfigDrive {
		return files, nil
	}
	md, err := a.InstanceMetadata(ctx, s.ID)
	if err != nil {
		return nil, fmt.Errorf("config drive: %w", err)
	}
	tree, err := metadata.Render(md)
	if err != nil {
		return nil, fmt.Errorf("config drive: %w", err)
	}
	cd := tree.ConfigDrive()
	paths := make([]string, 0, len(cd))
	for p := range cd {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		files = append(files, drivers.File{Path: metadata.ConfigDriveDir + "/" + p, Mode: 0o444, Content: cd[p]})
	}
	return files, nil
}

// hostnameRE is a host name Docker and the kernel take: labels of letters,
// digits and hyphens, 63 characters at most.
var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// kernelHostname is the host name the server's UTS namespace takes for h:
// h itself, or, for an FQDN longer than the kernel's 64 characters (2.94
// allows 255), its first label (at most 63), as cloud-init sets the short
// name of a long FQDN.
func kernelHostname(h string) string {
	if len(h) <= 64 {
		return h
	}
	short, _, _ := strings.Cut(h, ".")
	if len(short) > 63 {
		short = short[:63]
	}
	return short
}

// userDataHostname is the hostname a cloud-config in s's user data asks
// for ("" for none or one that is no valid host name, which is logged): a
// server cannot set its own (no CAP_SYS_ADMIN), so the agent gives it to
// the server's UTS namespace at every create.
func (a *Agent) userDataHostname(s protocol.InstanceSpec) string {
	plan, err := userdata.Decode(s.UserData)
	if err != nil || plan.Hostname == "" {
		return ""
	}
	if !hostnameRE.MatchString(plan.Hostname) {
		a.log.Warn("cloud-config hostname is not a valid host name; ignored", "instance", s.ID, "hostname", plan.Hostname)
		return ""
	}
	return plan.Hostname
}

// setBuildPassword puts the adminPass hash of a create or rebuild in root's
// /etc/shadow line of the new disk of server s (created, not yet
// started), as Nova's driver injects the admin password at spawn. An
// image without /etc/shadow (or a driver that cannot) keeps the build
// going without a password, as Nova's spawn does: logged, and the
// server's owner gets changePassword's 501 that says why. A driver that
// sets it at create (Capabilities.PasswordAtCreate: buildPassword gave it
// the hash) has done so already.
func (a *Agent) setBuildPassword(ctx context.Context, s protocol.InstanceSpec) {
	if s.AdminPassHash == "" || a.drv.Capabilities().PasswordAtCreate {
		return
	}
	ps, ok := a.drv.(drivers.PasswordSetter)
	if !ok {
		a.log.Warn("adminPass not set: the driver cannot set passwords", "instance", s.ID, "driver", a.drv.Name())
		return
	}
	if err := ps.SetAdminPassword(ctx, s.ID, s.AdminPassHash); err != nil {
		a.log.Warn("adminPass not set in the new disk", "instance", s.ID, "error", err)
	}
}

// buildPassword is the hash a new disk of server s gets from the driver's
// Create or Rebuild (drivers.Spec.AdminPassHash): s's adminPass's for a
// driver that sets it there, else "" (setBuildPassword sets it after).
func (a *Agent) buildPassword(s protocol.InstanceSpec) string {
	if !a.drv.Capabilities().PasswordAtCreate {
		return ""
	}
	return s.AdminPassHash
}

// setRescuePassword puts a rescue's adminPass hash in root's /etc/shadow
// line of the rescue system just started; one without /etc/shadow boots
// without it (logged), as Nova's rescue does without password injection.
func (a *Agent) setRescuePassword(ctx context.Context, id, hash string) {
	if hash == "" {
		return
	}
	ps, ok := a.drv.(drivers.RescuePasswordSetter)
	if !ok {
		a.log.Warn("rescue adminPass not set: the driver cannot set passwords", "instance", id, "driver", a.drv.Name())
		return
	}
	if err := ps.SetRescuePassword(ctx, id, hash); err != nil {
		a.log.Warn("rescue adminPass not set in the rescue system", "instance", id, "error", err)
	}
}

// setAdminPassword has the driver put req.Hash in root's /etc/shadow line
// (changePassword); a driver or image that cannot is NotSupported.
func (a *Agent) setAdminPassword(ctx context.Context, req protocol.SetAdminPassword) error {
	ps, ok := a.drv.(drivers.PasswordSetter)
	if !ok {
		return fmt.Errorf("set the password of %s: driver %s: %w", req.InstanceID, a.drv.Name(), drivers.ErrNotSupported)
	}
	ctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	unlock, err := a.locks.lock(ctx, req.InstanceID)
	if err != nil {
		return err
	}
	defer unlock()
	if err := ps.SetAdminPassword(ctx, req.InstanceID, req.Hash); err != nil {
		return fmt.Errorf("set the password of %s on %s: %w", req.InstanceID, a.cfg.Host, err)
	}
	return nil
}
