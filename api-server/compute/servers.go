package compute

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/shadowpw"
	"github.com/capsule-cloud/capsule/store"
)

func newUUID() string { return uuid.NewString() }

// requestID is the id the request-id middleware (or withVersion) put on
// the response; instance actions are recorded under it.
func requestID(w http.ResponseWriter) string { return w.Header().Get("x-compute-request-id") }

// lastSegment accepts an id or a full href (flavorRef/imageRef may be
// either).
func lastSegment(ref string) string {
	ref = strings.TrimRight(ref, "/")
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		return ref[i+1:]
	}
	return ref
}

type createRequest struct {
	Server struct {
		Name             *string           `json:"name"`
		ImageRef         *string           `json:"imageRef"`
		FlavorRef        any               `json:"flavorRef"`
		Networks         json.RawMessage   `json:"networks"`
		Metadata         map[string]any    `json:"metadata"`
		AdminPass        *string           `json:"adminPass"`
		KeyName          *string           `json:"key_name"`
		AvailabilityZone *string           `json:"availability_zone"`
		UserData         *string           `json:"user_data"`
		ConfigDrive      any               `json:"config_drive"`
		MinCount         any               `json:"min_count"`
		MaxCount         any               `json:"max_count"`
		AccessIPv4       string            `json:"accessIPv4"`
		AccessIPv6       string            `json:"accessIPv6"`
		Description      *string           `json:"description"`
		DiskConfig       string            `json:"OS-DCF:diskConfig"`
		SecurityGroups   []map[string]any  `json:"security_groups"`
		ReturnResID      bool              `json:"return_reservation_id"`
		Tags             []string          `json:"tags"`
		BDM              []json.RawMessage `json:"block_device_mapping_v2"`
		TrustedCerts     json.RawMessage   `json:"trusted_image_certificates"`
		Hostname         *string           `json:"hostname"`
		Host             *string           `json:"host"`
		HypervisorHost   *string           `json:"hypervisor_hostname"`
	} `json:"server"`
	// Hints sits beside "server" (OS-SCH-HNT: is its pre-2.1 name).
	Hints       json.RawMessage `json:"os:scheduler_hints"`
	LegacyHints json.RawMessage `json:"OS-SCH-HNT:scheduler_hints"`
}

func asInt(v any, def int) (int, bool) {
	switch x := v.(type) {
	case nil:
		return def, true
	case float64:
		if x != float64(int(x)) {
			return 0, false
		}
		return int(x), true
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		return n, err == nil
	}
	return 0, false
}

func validName(name string) error {
	if strings.TrimSpace(name) == "" {
		return errdefs.InvalidArgument("Invalid input for field/attribute name. Value: name must not be empty or only whitespace.")
	}
	if utf8.RuneCountInString(name) > 255 {
		return errdefs.InvalidArgument("Invalid input for field/attribute name. Value is too long (maximum is 255 characters).")
	}
	if !utf8.ValidString(name) {
		return errdefs.InvalidArgument("Invalid input for field/attribute name. Value is not valid UTF-8.")
	}
	return nil
}

// accessIP validates an accessIPv4/accessIPv6 value and returns it in
// canonical form, as Nova stores it: Tempest sends
// "0000:0000:0000:0000:0000:babe:220.12.22.2" and expects "::babe:dc0c:1602"
// back, and its response schema requires a valid address or "".
func accessIP(field, v string, want6 bool) (string, error) {
	if v == "" {
		return "", nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Is6() != want6 || a.Zone() != "" {
		return "", errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s is not a valid IP address.", field, v)
	}
	return a.String(), nil
}

var hostnameBad = regexp.MustCompile(`[^a-z0-9-]+`)

// hostnameFor turns a display name into an RFC 952 hostname, as Nova does.
func hostnameFor(name string) string {
	h := hostnameBad.ReplaceAllString(strings.ToLower(name), "-")
	h = strings.Trim(h, "-")
	if len(h) > 63 {
		h = strings.Trim(h[:63], "-")
	}
	if h == "" {
		h = "server"
	}
	return h
}

func (s *Service) createServer(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	v := versionOf(ctx)
	var req createRequest
	if !decodeBody(w, r, &req) {
		return
	}
	in := req.Server
	if in.Name == nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute server. Value: 'name' is a required property"))
		return
	}
	if err := validName(*in.Name); err != nil {
		s.fail(w, r, err)
		return
	}
	for _, raw := range in.BDM {
		var bdm map[string]json.RawMessage
		if json.Unmarshal(raw, &bdm) != nil {
			continue
		}
		if _, ok := bdm["volume_type"]; ok && !v.AtLeast(67) {
			// 2.67's volume_type (below it the key is unknown).
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute block_device_mapping_v2. Additional properties are not allowed ('volume_type' was unexpected)"))
			return
		}
	}
	if in.Hostname != nil {
		if !v.AtLeast(90) {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute server. Additional properties are not allowed ('hostname' was unexpected)"))
			return
		}
		if err := validHostname(*in.Hostname, v); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if in.TrustedCerts != nil {
		if err := refuseTrustedCerts(v, in.TrustedCerts); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if in.FlavorRef == nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute server. Value: 'flavorRef' is a required property"))
		return
	}
	flavorRef := lastSegment(fmt.Sprint(in.FlavorRef))
	if f, ok := in.FlavorRef.(float64); ok {
		flavorRef = strconv.Itoa(int(f))
	}
	flavor, err := s.findFlavor(ctx, flavorRef)
	if err != nil || flavor.Disabled || !s.flavorVisible(ctx, flavor) {
		writeFault(w, errdefs.InvalidArgumentf("Flavor %s could not be found.", flavorRef))
		return
	}
	// Extra specs are validated when set from 2.86 only (Nova's rule);
	// one a host could not honour refuses the boot here, as Nova's
	// create refuses an invalid hw: policy, not on the host.
	if _, err := limits.Parse(specsMap(flavor), flavor.VCPUs); err != nil {
		writeFault(w, errdefs.InvalidArgumentf("Flavor %s has invalid extra specs: %v", flavor.FlavorID, err))
		return
	}
	imageID := ""
	if in.ImageRef != nil {
		imageID = lastSegment(*in.ImageRef)
	}
	bdms, baseImage := in.BDM, ""
	if imageID != "" {
		// A volume-backed server's snapshot image maps volume snapshots
		// (volsnapshot.go): its mappings come before the request's, as
		// Nova merges them.
		if bi, err := s.findImage(ctx, imageID); err == nil {
			ib, base, err := imageBDMs(bi)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if len(ib) > 0 {
				bdms, baseImage = mergeBDMs(ib, in.BDM), base
			}
		}
	}
	var asked []store.EphemeralDisk
	plans, volumeHost, err := s.planBDMs(ctx, bdms, imageID, creds.ProjectID, flavor.RootGB, baseImage, &asked)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ephs, err := ephemeralDisks(asked, flavor.EphemeralGB)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ephJSON := ""
	if len(ephs) > 0 {
		b, _ := json.Marshal(ephs)
		ephJSON = string(b)
	}
	bootVol := bootVolumePlan(plans)
	if bootVol != nil {
		// Volume-backed: the image (if any) is the boot volume's source.
		imageID = ""
	} else if imageID == "" {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute imageRef. An image is required to boot a server (or a block-device mapping with boot_index 0 and destination_type volume)."))
		return
	}
	img := &store.Image{}
	if imageID != "" {
		img, err = s.findImage(ctx, imageID)
		if err != nil {
			writeFault(w, errdefs.InvalidArgumentf("Image %s could not be found.", imageID))
			return
		}
		if img.Status != "active" {
			writeFault(w, errdefs.InvalidArgumentf("Image %s is not active.", imageID))
			return
		}
		if err := image.Bootable(img); err != nil {
			writeFault(w, err)
			return
		}
	}
	if img.MinRAM > flavor.MemoryMB {
		writeFault(w, errdefs.InvalidArgument("Flavor's memory is too small for requested image."))
		return
	}
	if img.MinDisk > flavor.RootGB && flavor.RootGB > 0 {
		writeFault(w, errdefs.InvalidArgument("Flavor's disk is too small for requested image."))
		return
	}
	ip4, err := accessIP("accessIPv4", in.AccessIPv4, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ip6, err := accessIP("accessIPv6", in.AccessIPv6, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sgRefs, err := validateSecurityGroups(in.SecurityGroups)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var sgIDs *[]string
	if len(sgRefs) > 0 {
		ids, err := s.resolveSecurityGroups(ctx, creds.ProjectID, sgRefs)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		sgIDs = &ids
	}
	meta, err := serverMetadata(in.Metadata)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Tags != nil {
		if !versionOf(ctx).AtLeast(52) {
			writeFault(w, errdefs.InvalidArgument("Additional properties are not allowed ('tags' was unexpected)"))
			return
		}
		if err := validTagList(in.Tags); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if !s.metadataFits(w, r, len(meta)) {
		return
	}
	keypair, kpOK := s.serverKeypair(w, r, in.KeyName)
	if !kpOK {
		return
	}
	hintsRaw := req.Hints
	if len(hintsRaw) == 0 {
		hintsRaw = req.LegacyHints
	}
	placement, ok := s.schedulerHints(w, r, hintsRaw)
	if !ok {
		return
	}
	zone, forcedHost := "", ""
	if in.AvailabilityZone != nil && *in.AvailabilityZone != "" {
		var host string
		zone, host, _ = strings.Cut(*in.AvailabilityZone, ":")
		if host != "" {
			if !creds.IsAdmin() {
				writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:servers:create:forced_host to be performed."))
				return
			}
			if !s.computeHostExists(ctx, host) {
				writeFault(w, errdefs.InvalidArgumentf("Compute host %s could not be found.", host))
				return
			}
			forcedHost = host
		}
		if !s.zoneExists(ctx, zone) {
			writeFault(w, errdefs.InvalidArgumentf("The requested availability zone is not available: %s", zone))
			return
		}
	}
	if in.Host != nil || in.HypervisorHost != nil {
		host, err := s.requestedDestination(ctx, v, in.Host, in.HypervisorHost, forcedHost != "")
		if err != nil {
			s.fail(w, r, err)
			return
		}
		forcedHost = host
	}
	userData := ""
	if in.UserData != nil && *in.UserData != "" {
		if err := checkUserData(*in.UserData); err != nil {
			writeFault(w, err)
			return
		}
		userData = *in.UserData
	}
	configDrive, ok := false, true
	if in.ConfigDrive != nil {
		configDrive, ok = novaBool(in.ConfigDrive)
	}
	if !ok {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute config_drive. Value: %v. %v is not of type 'boolean', 'string'", in.ConfigDrive, in.ConfigDrive))
		return
	}
	configDrive = configDrive || s.opts.ForceConfigDrive
	minCount, ok1 := asInt(in.MinCount, 1)
	maxCount, ok2 := asInt(in.MaxCount, minCount)
	if !ok1 || !ok2 || minCount < 1 || maxCount < 1 || minCount > maxCount {
		writeFault(w, errdefs.InvalidArgument("min_count and max_count must be integers >= 1 with min_count <= max_count."))
		return
	}
	if volumeHost != "" {
		if forcedHost != "" && forcedHost != volumeHost {
			writeFault(w, errdefs.InvalidArgumentf("Block Device Mapping is Invalid: the server is asked for on host %s, its local volumes are on host %s.", forcedHost, volumeHost))
			return
		}
		forcedHost = volumeHost
	}
	if maxCount > 1 && len(plans) > 0 {
		for _, p := range plans {
			if p.volume != nil || p.snapshot != nil {
				writeFault(w, errdefs.InvalidArgument("Cannot attach one or more volumes to multiple instances"))
				return
			}
		}
	}
	if in.Hostname != nil && maxCount > 1 {
		writeFault(w, errdefs.InvalidArgument("Unable to launch multiple instances with a single configured hostname."))
		return
	}
	if in.Description != nil && (!v.AtLeast(19) || utf8.RuneCountInString(*in.Description) > 255) {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute description."))
		return
	}
	nicReqs, err := s.resolveNICs(ctx, in.Networks, v, maxCount)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for i := range nicReqs {
		nicReqs[i].SecurityGroups = sgIDs
	}
	adminPass, passHash, err := s.instancePassword(in.AdminPass)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	metaJSON, _ := json.Marshal(meta)
	specs := map[string]string{}
	for _, es := range flavor.ExtraSpecs {
		specs[es.Key] = es.Value
	}
	specsJSON, _ := json.Marshal(specs)
	resID := "r-" + strings.ReplaceAll(newUUID(), "-", "")[:8]
	reqID := requestID(w)
	newInstance := func(i, count int) store.Instance {
		name := *in.Name
		if count > 1 {
			name = fmt.Sprintf("%s-%d", *in.Name, i+1)
		}
		inst := store.Instance{
			ID: newUUID(), Name: name, ProjectID: creds.ProjectID, UserID: creds.UserID, ImageID: img.ID,
			FlavorRowID: flavor.ID, FlavorID: flavor.FlavorID, FlavorName: flavor.Name, VCPUs: flavor.VCPUs,
			MemoryMB: flavor.MemoryMB, RootGB: flavor.RootGB, ExtraSpecs: string(specsJSON), EphemeralDisks: ephJSON,
			AvailabilityZone: zone, RequestedZone: zone,
			Metadata: string(metaJSON), AccessIPv4: ip4, AccessIPv6: ip6,
			Description: in.Description, UserData: userData, ConfigDrive: configDrive, ReservationID: resID, LaunchIndex: i,
			Hostname: hostnameOf(in.Hostname, name), BuildAttempts: 1, RequestedHost: forcedHost, Tags: store.EncodeTags(in.Tags),
			AdminPassHash: passHash,
		}
		inst.SchedulerHints = placement.hintsJSON()
		if keypair != nil {
			// The key is copied: the server keeps it if the keypair goes.
			inst.KeyName, inst.KeyData = &keypair.Name, keypair.PublicKey
		}
		return inst
	}
	// The quota check and the rows of every server it allows commit in
	// one transaction holding the project's compute quota lock: concurrent
	// creates (in this process or another API's) count each other's
	// servers, so a project never holds more than its quota.
	var created []store.Instance
	err = s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		created = nil
		count, err := s.fitQuota(tx, creds.ProjectID, creds.UserID, flavor, minCount, maxCount)
		if err != nil {
			return err
		}
		now := s.opts.Now()
		if vols, gb, largest := newGigabytes(plans); vols > 0 {
			// The volumes the mappings make count against the project's
			// Block Storage quota, under its lock, with the servers.
			guard := store.VolumeQuotaGuard(creds.ProjectID, map[string]int{store.QuotaVolumes: vols * count, store.QuotaGigabytes: gb * count,
				store.QuotaPerVolumeGigabytes: largest}, s.opts.VolumeQuota)
			if err := guard(tx); err != nil {
				return err
			}
		}
		for i := 0; i < count; i++ {
			inst := newInstance(i, count)
			if err := instance.Create(tx, &inst); err != nil {
				return err
			}
			if err := s.recordBDMs(tx, &inst, plans, now); err != nil {
				return err
			}
			if err := placement.join(tx, inst.ID); err != nil {
				return err
			}
			if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "create", RequestID: reqID,
				UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
				return err
			}
			created = append(created, inst)
		}
		return nil
	})
	if err != nil && writeJoinError(w, placement, err) {
		return
	}
	if errdefs.IsQuotaExceeded(err) || errdefs.IsInvalidArgument(err) {
		s.fail(w, r, err)
		return
	}
	if err != nil {
		s.log.Error("create instance rows", "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not record the server.")
		return
	}
	// forget removes the records of servers that will not be built (their
	// ports first), rather than leave them stuck in BUILD.
	forget := func(insts []store.Instance) {
		ctx := context.WithoutCancel(ctx)
		for i := range insts {
			inst := &insts[i]
			if err := s.st.ReleaseInstancePorts(ctx, inst); err != nil {
				s.log.Error("release ports of a server not created", "instance", inst.ID, "error", err)
			}
			if err := instance.ForgetBuildVolumes(s.st.WithContext(ctx), inst.ID); err != nil {
				s.log.Error("release volumes of a server not created", "instance", inst.ID, "error", err)
			}
			s.st.WithContext(ctx).Where("instance_id = ?", inst.ID).Delete(&store.InstanceAction{})
			_ = store.RemoveGroupMember(s.st.WithContext(ctx), inst.ID)
			s.st.WithContext(ctx).Delete(&store.Instance{}, "id = ?", inst.ID)
		}
	}
	for i := range created {
		inst := &created[i]
		owned, err := s.allocateNICs(ctx, inst, nicReqs)
		if err != nil {
			forget(created[i:])
			s.fail(w, r, err)
			return
		}
		if ports, err := s.st.ServerPorts(ctx, inst.ID, inst.ProjectID); err == nil {
			s.membersChanged(ctx, groupsOfPorts(ports), inst) // the new addresses reach the groups naming them
		}
		// The server's ports and its schedule request commit together
		// (the outbox): once they did, the request reaches the scheduler
		// even if this process dies before publishing it.
		var out outbox.Batch
		err = s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if len(owned) > 0 {
				inst.SetOwnedPorts(owned)
				if err := tx.Model(&store.Instance{}).Where("id = ?", inst.ID).Update("owned_ports", inst.OwnedPorts).Error; err != nil {
					return err
				}
			}
			msg, err := bus.NewMessage(protocol.KindScheduleInstance, protocol.ScheduleInstance{
				InstanceID: inst.ID, RequestID: reqID, Attempt: 1})
			if err != nil {
				return err
			}
			return out.Enqueue(tx, bus.SchedulerQueue, inst.ID, msg)
		})
		if err != nil {
			s.log.Error("record schedule request", "instance", inst.ID, "error", err)
			forget(created[i:])
			writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not record the server's ports.")
			return
		}
		s.deliver(ctx, &out)
	}
	first := created[0]
	if in.ReturnResID {
		writeJSON(w, http.StatusAccepted, map[string]any{"reservation_id": resID})
		return
	}
	links := s.links(r, "servers", first.ID)
	w.Header().Set("Location", links[0]["href"])
	body := map[string]any{"id": first.ID, "links": links, "OS-DCF:diskConfig": "MANUAL",
		"security_groups": createdGroups(sgRefs)}
	if !s.opts.NoInstancePassword {
		body["adminPass"] = adminPass
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"server": body})
}

// serverMetadata checks a server's metadata as Nova's schema does: string
// keys and values of 1-255 and 0-255 characters. It returns a 400 message
// for bad input; the item quota is the caller's (a 403 on create).
func serverMetadata(in map[string]any) (map[string]string, error) {
	meta := map[string]string{}
	for k, val := range in {
		str, ok := val.(string)
		if !ok || k == "" || len(k) > 255 || len(str) > 255 {
			return nil, errdefs.InvalidArgument("Invalid input for field/attribute metadata. Keys and values must be strings of at most 255 characters.")
		}
		meta[k] = str
	}
	return meta, nil
}

// validateSecurityGroups checks the requested security groups' form and
// returns their names (or ids); the create resolves them in the project.
// createdGroups is a create response's security_groups: the names asked
// for, else the default group.
func createdGroups(refs []string) []map[string]string {
	if len(refs) == 0 {
		return []map[string]string{{"name": "default"}}
	}
	out := make([]map[string]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, map[string]string{"name": r})
	}
	return out
}

func validateSecurityGroups(groups []map[string]any) ([]string, error) {
	var refs []string
	for _, g := range groups {
		name, ok := g["name"].(string)
		if !ok || name == "" {
			return nil, errdefs.InvalidArgument("Invalid input for field/attribute security_groups. Each group needs a name.")
		}
		refs = append(refs, name)
	}
	return refs, nil
}

// instancePassword is the adminPass of a create, rebuild or rescue (the
// caller's, else a generated one) and its crypt(3) hash, what the host
// puts in root's /etc/shadow line; both "" when the cloud does not
// enable instance passwords (Nova's enable_instance_password=false).
func (s *Service) instancePassword(requested *string) (pass, hash string, err error) {
	if s.opts.NoInstancePassword {
		return "", "", nil
	}
	pass = randomPassword()
	if requested != nil {
		pass = *requested
	}
	if hash, err = shadowpw.Hash(pass); err != nil {
		return "", "", fmt.Errorf("hash the adminPass: %w", err)
	}
	return pass, hash, nil
}

func randomPassword() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// fitQuota returns how many servers (between min and max) the quota
// allows: the project's, and the caller's own where they have limits of
// their own. Otherwise it returns Nova's quota error. It takes the
// project's compute quota lock in tx, the transaction that then records
// the servers.
func (s *Service) fitQuota(tx *gorm.DB, projectID, userID string, f *store.Flavor, min, max int) (int, error) {
	if err := store.LockQuota(tx, store.ComputeQuota, projectID); err != nil {
		s.log.Error("quota lock of a server creation", "project", projectID, "error", err)
		return 0, quotaUnchecked(err)
	}
	qc, err := s.loadQuotaCheck(tx, projectID, userID)
	if err != nil {
		s.log.Error("quota check of a server creation", "project", projectID, "error", err)
		return 0, quotaUnchecked(err)
	}
	if n := qc.room(serversOf(f, 1), max); n >= min {
		return n, nil
	}
	return 0, qc.over(serversOf(f, min))
}

func (s *Service) findImage(ctx context.Context, id string) (*store.Image, error) {
	creds := auth.FromContext(ctx)
	var img store.Image
	if err := s.st.WithContext(ctx).Where("id = ?", id).First(&img).Error; err != nil {
		return nil, store.NotFound(err, "image "+id)
	}
	ok, err := image.CanUse(ctx, s.st, creds, &img)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("image %s: %w", id, store.ErrNotFound)
	}
	return &img, nil
}

func (s *Service) computeHostExists(ctx context.Context, host string) bool {
	var n int64
	s.st.WithContext(ctx).Model(&store.Service{}).Where("binary_name = ? AND host = ?", store.ComputeBinary, host).Count(&n)
	return n > 0
}

// maxUserData is Nova's schema limit on user_data: 65,535 characters of
// base64 (about 48 KiB of data).
const maxUserData = 65535

// checkUserData validates user_data as Nova's schema does on create and
// rebuild: base64, at most maxUserData characters.
func checkUserData(ud string) error {
	if len(ud) > maxUserData {
		return errdefs.InvalidArgumentf("Invalid input for field/attribute user_data. Value is too long: %d characters of base64, at most %d.", len(ud), maxUserData)
	}
	if _, err := base64.StdEncoding.DecodeString(ud); err != nil {
		return errdefs.InvalidArgument("Invalid input for field/attribute user_data. Value must be base64 encoded.")
	}
	return nil
}

func (s *Service) zoneExists(ctx context.Context, zone string) bool {
	var n int64
	s.st.WithContext(ctx).Model(&store.Service{}).Where("binary_name = ? AND zone = ?", store.ComputeBinary, zone).Count(&n)
	return n > 0 || zone == "nova"
}

// loadServer finds a live server the caller may see; other projects'
// servers are indistinguishable from missing ones (404).
func (s *Service) loadServer(w http.ResponseWriter, r *http.Request) (*store.Instance, bool) {
	return s.loadServerAny(w, r, false)
}

func (s *Service) loadServerAny(w http.ResponseWriter, r *http.Request, withDeleted bool) (*store.Instance, bool) {
	id := r.PathValue("id")
	creds := auth.FromContext(r.Context())
	var inst store.Instance
	q := s.st.WithContext(r.Context()).Where("id = ?", id)
	if !withDeleted {
		q = q.Where("deleted_at IS NULL")
	}
	if !creds.IsAdmin() {
		q = q.Where("project_id = ?", creds.ProjectID)
	}
	// Take, not First: the id is the key, and First's ORDER BY is more
	// SQL to parse at every GET of a polled server.
	if err := q.Take(&inst).Error; err != nil {
		// An id the database refuses as text (PostgreSQL: a NUL byte,
		// invalid UTF-8) names no server either.
		if errors.Is(err, gorm.ErrRecordNotFound) || errdefs.KindOf(err) == errdefs.ErrInvalidArgument {
			writeFault(w, errdefs.NotFoundf("Instance %s could not be found.", id))
		} else {
			s.log.Error("load server", "id", id, "error", err)
			writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		}
		return nil, false
	}
	return &inst, true
}

func (s *Service) showServer(w http.ResponseWriter, r *http.Request) {
	// The row as the version query finds it unchanged since the last
	// show, else read whole (rowcache.go).
	inst, ok := s.loadServerCached(w, r)
	if !ok {
		return
	}
	// The list's few batched queries rather than the single view's
	// per-NIC ones: clients poll this every few tens of milliseconds.
	b := s.loadViewBatch(r.Context(), []store.Instance{*inst})
	out := s.serverViewWith(r, inst, viewFull, b)
	s.addServerGroups(r, inst, out)
	writeJSON(w, http.StatusOK, map[string]any{"server": out})
}

// addServerGroups adds 2.71's server_groups (the group the server is in,
// if any) to a server's show, update or rebuild body; a list leaves it
// out, as Nova.
func (s *Service) addServerGroups(r *http.Request, inst *store.Instance, out map[string]any) {
	if !versionOf(r.Context()).AtLeast(71) {
		return
	}
	groups := []string{}
	g, err := s.st.GroupOf(r.Context(), inst.ID)
	if err != nil {
		s.log.Warn("server group of server", "instance", inst.ID, "error", err)
	} else if g != nil {
		groups = append(groups, g.ID)
	}
	out["server_groups"] = groups
}

func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "1", "t", "true", "on", "y", "yes":
		return true
	}
	return false
}

func (s *Service) listServers(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		creds := auth.FromContext(ctx)
		v := versionOf(ctx)
		q := r.URL.Query()
		db := s.st.WithContext(ctx).Model(&store.Instance{})
		allTenants := false
		if vals, ok := q["all_tenants"]; ok && creds.IsAdmin() {
			allTenants = truthy(vals[0])
		}
		if allTenants {
			if p := q.Get("project_id"); p != "" {
				db = db.Where("project_id = ?", p)
			} else if p := q.Get("tenant_id"); p != "" {
				db = db.Where("project_id = ?", p)
			}
		} else {
			db = db.Where("project_id = ?", creds.ProjectID)
		}
		if v.AtLeast(75) {
			if err := strictServerQuery(q); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		if creds.IsAdmin() && truthy(q.Get("deleted")) && q.Has("deleted") {
			db = db.Where("deleted_at IS NOT NULL")
		} else {
			db = db.Where("deleted_at IS NULL")
		}
		if st := q["status"]; len(st) > 0 {
			var states []string
			for _, one := range st {
				vms, ok := lifecycle.StatusFilter(one)
				if !ok {
					if v.AtLeast(38) {
						writeFault(w, errdefs.InvalidArgument("Invalid status value: "+one))
						return
					}
					continue
				}
				for _, vm := range vms {
					states = append(states, string(vm))
				}
			}
			if len(states) == 0 {
				writeJSON(w, http.StatusOK, map[string]any{"servers": []any{}})
				return
			}
			db = db.Where("vm_state IN ?", states)
		}
		if img := q.Get("image"); img != "" {
			db = db.Where("image_id = ?", lastSegment(img))
		}
		if fl := q.Get("flavor"); fl != "" {
			db = db.Where("flavor_id = ?", lastSegment(fl))
		}
		if h := q.Get("host"); h != "" && creds.IsAdmin() {
			db = db.Where("host = ?", h)
		}
		since, before, err := changesWindow(q, v, true)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		db = whereChanged(db, since, before)
		// Nova's filters on the server's own columns: admins' always,
		// everyone's from 2.83 (before, Nova drops them for others).
		var regexFilters []func(*store.Instance) bool
		if creds.IsAdmin() || v.AtLeast(83) {
			// Query keys that are their columns' names (a fixed list).
			for _, col := range []string{"user_id", "vm_state", "task_state"} {
				if val, ok := q[col]; ok {
					db = db.Where(col+" = ?", val[0])
				}
			}
			if ps, ok := q["power_state"]; ok {
				n, err := strconv.Atoi(ps[0])
				if err != nil {
					writeFault(w, errdefs.InvalidArgumentf("Invalid input for query parameters power_state. Value: %s.", ps[0]))
					return
				}
				db = db.Where("power_state = ?", n)
			}
			if kn, ok := q["key_name"]; ok {
				match := nameFilter(kn[0])
				regexFilters = append(regexFilters, func(i *store.Instance) bool { return i.KeyName != nil && match(*i.KeyName) })
			}
			if az, ok := q["availability_zone"]; ok {
				match := nameFilter(az[0])
				regexFilters = append(regexFilters, func(i *store.Instance) bool { return match(i.AvailabilityZone) })
			}
		}
		if lk, ok := q["locked"]; ok && v.AtLeast(73) {
			b, isNone, valid := parseBoolish(lk[0])
			if !valid || isNone {
				writeFault(w, errdefs.InvalidArgumentf("Unrecognized value '%s' for locked", lk[0]))
				return
			}
			db = db.Where("locked = ?", b)
		}
		if rid := q.Get("reservation_id"); rid != "" {
			db = db.Where("reservation_id = ?", rid)
		}
		tf, tagged := parseTagFilter(q)
		tagged = tagged && v.AtLeast(26)
		name := q.Get("name")
		sk := q.Get("sort_key")
		byName := sk == "display_name" || sk == "name"
		ipMatch, byIP := ipFilter(q, creds.IsAdmin() || v.AtLeast(5))
		var insts []store.Instance
		var limit int
		var more, ok bool
		if !tagged && name == "" && !byName && !byIP && len(regexFilters) == 0 {
			// Every filter is SQL: page in the database (keyset on the
			// list order), so a page costs its own rows only.
			if insts, limit, more, ok = s.pageServers(w, r, db); !ok {
				return
			}
		} else {
			if err := db.Order("created_at DESC").Order("id DESC").Find(&insts).Error; err != nil {
				s.log.Error("list servers", "error", err)
				writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
				return
			}
			if tagged {
				kept := insts[:0]
				for i := range insts {
					if tf.match(store.TagsOf(&insts[i])) {
						kept = append(kept, insts[i])
					}
				}
				insts = kept
			}
			// name is an unanchored regex in Nova; filter in Go for
			// portability between SQLite and PostgreSQL.
			if name != "" {
				match := nameFilter(name)
				kept := insts[:0]
				for _, in := range insts {
					if match(in.Name) {
						kept = append(kept, in)
					}
				}
				insts = kept
			}
			if len(regexFilters) > 0 {
				kept := insts[:0]
				for i := range insts {
					if !slices.ContainsFunc(regexFilters, func(f func(*store.Instance) bool) bool { return !f(&insts[i]) }) {
						kept = append(kept, insts[i])
					}
				}
				insts = kept
			}
			if byIP {
				kept := insts[:0]
				for i := range insts {
					if s.serverHasIP(ctx, &insts[i], ipMatch) {
						kept = append(kept, insts[i])
					}
				}
				insts = kept
			}
			if byName {
				asc := q.Get("sort_dir") == "asc"
				sort.SliceStable(insts, func(i, j int) bool {
					if asc {
						return insts[i].Name < insts[j].Name
					}
					return insts[i].Name > insts[j].Name
				})
			}
			if insts, limit, more, ok = pageOf(w, r, insts, func(i *store.Instance) string { return i.ID }); !ok {
				return
			}
		}
		var batch *viewBatch
		if detail {
			batch = s.loadViewBatch(ctx, insts)
		}
		items := make([]any, 0, len(insts))
		for i := range insts {
			if detail {
				items = append(items, s.serverViewWith(r, &insts[i], viewFull, batch))
			} else {
				items = append(items, map[string]any{"id": insts[i].ID, "name": insts[i].Name,
					"links": s.links(r, "servers", insts[i].ID)})
			}
		}
		out := map[string]any{"servers": items}
		if more && limit > 0 {
			out["servers_links"] = s.nextLinks(r, "servers", detail, limit, insts[len(insts)-1].ID)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// pageServers runs the list query db one page at a time in the list
// order (newest first, then id): the page after the marker server, found
// with the same filters (an unknown marker is a 400), at most limit+1 rows
// to know whether more follow.
func (s *Service) pageServers(w http.ResponseWriter, r *http.Request, db *gorm.DB) (insts []store.Instance, limit int,
	more bool, ok bool) {
	limit, ok = pageLimit(w, r)
	if !ok {
		return nil, 0, false, false
	}
	db = db.Session(&gorm.Session{})
	q := db
	if m := r.URL.Query().Get("marker"); m != "" {
		var marker []store.Instance
		if err := db.Select("id, created_at").Where("id = ?", m).Limit(1).Find(&marker).Error; err != nil {
			s.log.Error("list servers: marker", "error", err)
			writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
			return nil, 0, false, false
		}
		if len(marker) == 0 {
			writeFault(w, errdefs.InvalidArgumentf("marker [%s] not found", m))
			return nil, 0, false, false
		}
		at := marker[0].CreatedAt
		q = q.Where("(created_at < ? OR (created_at = ? AND id < ?))", at, at, marker[0].ID)
	}
	// The columns a server's view never shows are left out: a page is a
	// thousand rows.
	q = q.Omit("owned_ports", "key_data", "scheduler_hints", "tried_hosts", "requested_host", "old_flavor_row_id",
		"old_flavor_id", "old_flavor_name", "old_vcpus", "old_memory_mb", "old_root_gb", "old_extra_specs",
		"resize_from_state", "build_attempts", "flavor_row_id").Order("created_at DESC").Order("id DESC")
	if limit >= 0 {
		q = q.Limit(limit + 1)
	}
	if err := q.Find(&insts).Error; err != nil {
		s.log.Error("list servers", "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return nil, 0, false, false
	}
	if limit >= 0 && len(insts) > limit {
		return insts[:limit], limit, true, true
	}
	return insts, limit, false, true
}

func (s *Service) updateServer(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	var req struct {
		Server map[string]json.RawMessage `json:"server"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Server == nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute server. Value: 'server' is a required property"))
		return
	}
	v := versionOf(r.Context())
	upd := map[string]any{}
	for k, raw := range req.Server {
		var str *string
		if err := json.Unmarshal(raw, &str); err != nil {
			writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute %s.", k))
			return
		}
		switch k {
		case "name":
			if str == nil {
				writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute name."))
				return
			}
			if err := validName(*str); err != nil {
				s.fail(w, r, err)
				return
			}
			upd["name"] = *str
			inst.Name = *str
		case "accessIPv4", "accessIPv6":
			ip, err := accessIP(k, deref(str), k == "accessIPv6")
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if k == "accessIPv4" {
				upd["access_ipv4"], inst.AccessIPv4 = ip, ip
			} else {
				upd["access_ipv6"], inst.AccessIPv6 = ip, ip
			}
		case "OS-DCF:diskConfig":
		case "hostname":
			if !v.AtLeast(90) || str == nil {
				writeFault(w, errdefs.InvalidArgument("Additional properties are not allowed ('hostname' was unexpected)"))
				return
			}
			if err := validHostname(*str, v); err != nil {
				s.fail(w, r, err)
				return
			}
			upd["hostname"] = *str
			inst.Hostname = *str
		case "description":
			if !v.AtLeast(19) {
				writeFault(w, errdefs.InvalidArgument("Additional properties are not allowed ('description' was unexpected)"))
				return
			}
			upd["description"] = str
			inst.Description = str
		default:
			writeFault(w, errdefs.InvalidArgumentf("Additional properties are not allowed ('%s' was unexpected)", k))
			return
		}
	}
	if len(upd) > 0 {
		upd["updated_at"] = s.opts.Now()
		if err := s.st.WithContext(r.Context()).Model(&store.Instance{}).Where("id = ?", inst.ID).Updates(upd).Error; err != nil {
			writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
			return
		}
		inst.UpdatedAt = upd["updated_at"].(time.Time)
	}
	out := s.serverView(r, inst, updateView(v))
	s.addServerGroups(r, inst, out)
	writeJSON(w, http.StatusOK, map[string]any{"server": out})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (s *Service) deleteServer(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	creds := auth.FromContext(r.Context())
	if inst.Locked && !creds.IsAdmin() {
		writeFault(w, errdefs.Conflictf("Instance %s is locked", inst.ID))
		return
	}
	ports, _ := s.st.ServerPorts(r.Context(), inst.ID, inst.ProjectID)
	if err := s.startAction(w, r, inst, lifecycle.ActDelete, "delete"); err != nil {
		return
	}
	s.refreshAfterDelete(r.Context(), inst, groupsOfPorts(ports))
	noContent(w, http.StatusNoContent)
}

// errStateChanged: the instance left the state an action was checked
// against before the action could be recorded.
var errStateChanged = instance.ErrStateChanged

// startAction moves the instance into the action's task state (checked by
// the lifecycle rules, and conditional on nobody else having changed it),
// records the instance action and casts the work to the instance's host.
// The action is recorded only when the request is accepted: Tempest counts
// a server's actions exactly. It writes the error response itself and
// returns non-nil on failure.
func (s *Service) startAction(w http.ResponseWriter, r *http.Request, inst *store.Instance, action lifecycle.Action, apiName string) error {
	return s.startActionMsg(w, r, inst, protocol.InstanceAction{Action: action}, apiName)
}

// startActionMsg is startAction casting msg (its request and instance
// ids filled in): an action that carries more than its name (a rescue's
// image).
func (s *Service) startActionMsg(w http.ResponseWriter, r *http.Request, inst *store.Instance, msg protocol.InstanceAction, apiName string) error {
	return s.startActionPrep(w, r, inst, msg, apiName, nil)
}

// startActionPrep is startActionMsg with prep run in the action's
// transaction once the task is set (the server's row held): it may
// complete msg or refuse the action (an errdefs error is the answer).
func (s *Service) startActionPrep(w http.ResponseWriter, r *http.Request, inst *store.Instance, msg protocol.InstanceAction, apiName string,
	prep func(tx *gorm.DB, msg *protocol.InstanceAction) error) error {
	action := msg.Action
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	vm, task := inst.VMState, inst.TaskState
	_, err := lifecycle.Begin(action, vm, task)
	if err != nil {
		stateConflict(w, inst, apiName)
		return err
	}
	reqID := requestID(w)
	// No host yet (or never scheduled): nothing runs anywhere, so a delete
	// completes here.
	if action == lifecycle.ActDelete && inst.Host == "" {
		if err := s.st.StartAction(ctx, inst.ID, apiName, reqID, creds.UserID, creds.ProjectID); err != nil {
			s.log.Error("record action", "instance", inst.ID, "error", err)
			writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
			return err
		}
		if err := instance.MarkDeleted(ctx, s.st, inst.ID, s.opts.Now()); err != nil {
			s.log.Error("delete unscheduled instance", "instance", inst.ID, "error", err)
			writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
			return err
		}
		// A shelved-offloaded server runs nowhere either; its shelve
		// image goes with it.
		s.forgetShelveImage(ctx, inst)
		return nil
	}
	if inst.Host == "" {
		writeFault(w, errdefs.Conflictf("Cannot '%s' instance %s: it is not placed on any host", apiName, inst.ID))
		return errors.New("no host")
	}
	// The task, its action record and the message to the host commit
	// together (the outbox): the host gets the work once it committed,
	// even if this process dies before publishing it.
	var out outbox.Batch
	err = s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := instance.Begin(tx, inst, action, s.opts.Now(), nil); err != nil {
			return err
		}
		if prep != nil {
			if err := prep(tx, &msg); err != nil {
				return err
			}
		}
		now := s.opts.Now()
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: apiName, RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return err
		}
		msg.RequestID, msg.InstanceID = reqID, inst.ID
		return s.cast(tx, &out, inst.Host, inst.ID, protocol.KindInstanceAction, msg)
	})
	if errors.Is(err, errStateChanged) {
		writeFault(w, errdefs.Conflictf("Cannot '%s' instance %s: its state changed meanwhile", apiName, inst.ID))
		return err
	}
	if err != nil && errdefs.KindOf(err) != "" {
		s.fail(w, r, err)
		return err
	}
	if err != nil {
		s.log.Error("start action", "instance", inst.ID, "action", action, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return err
	}
	s.deliver(ctx, &out)
	return nil
}

// nameFilter is Nova's name filter: an unanchored regular expression, or
// the literal text when it is not a valid one (invalid UTF-8 included:
// QuoteMeta of it does not compile either).
func nameFilter(name string) func(string) bool {
	if re, err := regexp.Compile(name); err == nil {
		return re.MatchString
	}
	return func(s string) bool { return strings.Contains(s, name) }
}

// ipFilter is Nova's ip / ip6 server filter: each a regular expression
// matched at the start of the server's fixed IPs of that version (Python's
// re.match: anchored at the start, not at the end, so "10.0.0.1" also
// matches 10.0.0.12 as in Nova). A pattern that does not compile matches
// as a literal prefix. ip6 is honoured for non-admins from 2.5 only (Nova
// drops it before). ok is false when neither filter applies.
func ipFilter(q url.Values, ip6Allowed bool) (match func(addr netip.Addr) bool, ok bool) {
	compile := func(pat string) func(string) bool {
		if re, err := regexp.Compile("^(?:" + pat + ")"); err == nil {
			return re.MatchString
		}
		return func(s string) bool { return strings.HasPrefix(s, pat) }
	}
	var m4, m6 func(string) bool
	if q.Has("ip") {
		m4 = compile(q.Get("ip"))
	}
	if q.Has("ip6") && ip6Allowed {
		m6 = compile(q.Get("ip6"))
	}
	if m4 == nil && m6 == nil {
		return nil, false
	}
	return func(a netip.Addr) bool {
		if a.Is4() {
			return m4 != nil && m4(a.String())
		}
		return m6 != nil && m6(a.String())
	}, true
}

// serverHasIP reports whether one of the server's fixed IPs matches.
func (s *Service) serverHasIP(ctx context.Context, inst *store.Instance, match func(netip.Addr) bool) bool {
	for _, nic := range s.serverNICs(ctx, inst) {
		for _, a := range nic.port.FixedIPs {
			if ip, err := netip.ParseAddr(a.IPAddress); err == nil && match(ip) {
				return true
			}
		}
	}
	return false
}

// requestedDestination reads 2.74's host and hypervisor_hostname (admins
// only, Nova's requested_destination policy): the host to build on, which
// the scheduler still checks for room. A Capsule host is its own (only)
// hypervisor node, so both name the same host. They exclude the older
// "zone:host" form; below 2.74 they are unknown keys.
func (s *Service) requestedDestination(ctx context.Context, v apiVersion, host, node *string, zoneHost bool) (string, error) {
	if !v.AtLeast(74) {
		key := "host"
		if host == nil {
			key = "hypervisor_hostname"
		}
		return "", errdefs.InvalidArgumentf("Invalid input for field/attribute server. Additional properties are not allowed ('%s' was unexpected)", key)
	}
	if !auth.FromContext(ctx).IsAdmin() {
		return "", errdefs.Forbidden("Policy doesn't allow compute:servers:create:requested_destination to be performed.")
	}
	if zoneHost {
		return "", errdefs.InvalidArgument("The availability_zone zone:host form and host / hypervisor_hostname are mutually exclusive.")
	}
	for _, p := range []*string{host, node} {
		if p != nil && (*p == "" || len(*p) > 255) {
			return "", errdefs.InvalidArgument("Invalid input for field/attribute host. Value must be a string of 1-255 characters.")
		}
	}
	if host != nil && node != nil && *host != *node {
		return "", errdefs.InvalidArgumentf("Compute host %s has no hypervisor node %s: a Capsule host is its own node.", *host, *node)
	}
	name := deref(host)
	if name == "" {
		name = deref(node)
	}
	if !s.computeHostExists(ctx, name) {
		if host == nil {
			return "", errdefs.InvalidArgumentf("Compute host node %s could not be found.", name)
		}
		return "", errdefs.InvalidArgumentf("Compute host %s could not be found.", name)
	}
	return name, nil
}

// serverListKeys are the query keys Nova's server list schema knows at
// 2.75 (its index_query_v275, whose additionalProperties is false): any
// other is a 400 from 2.75. Knowing a key is not filtering on it: those
// Capsule does not filter on are accepted and ignored, as before 2.75.
var serverListKeys = []string{"user_id", "project_id", "tenant_id", "launch_index", "image_ref", "image", "kernel_id",
	"ramdisk_id", "hostname", "key_name", "power_state", "vm_state", "task_state", "host", "node", "flavor",
	"reservation_id", "launched_at", "terminated_at", "availability_zone", "name", "display_name", "description",
	"display_description", "locked_by", "uuid", "root_device_name", "config_drive", "access_ip_v4", "access_ip_v6",
	"auto_disk_config", "progress", "sort_key", "sort_dir", "all_tenants", "soft_deleted", "deleted", "status",
	"changes-since", "ip", "ip6", "created_at", "block_device_mapping", "services", "metadata", "system_metadata",
	"info_cache", "security_groups", "pci_devices", "limit", "marker", "tags", "tags-any", "not-tags", "not-tags-any",
	"changes-before", "locked"}

// strictServerQuery is 2.75's 400 for an unknown server list query key
// (and, at every microversion in Nova, for one naming an internal
// attribute: a leading underscore).
func strictServerQuery(q url.Values) error {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "_") || !slices.Contains(serverListKeys, k) {
			return errdefs.InvalidArgumentf("Invalid input for query parameters %s. Additional properties are not allowed ('%s' was unexpected)", k, k)
		}
	}
	return nil
}

// updateView is the view of a server's PUT and rebuild responses: from
// 2.75 the whole server, as GET shows it.
func updateView(v apiVersion) viewKind {
	if v.AtLeast(75) {
		return viewFull
	}
	return viewBasic
}

// serverTopology is 2.78's GET /servers/{id}/topology: a container server
// has no guest NUMA topology (its vCPUs are a CPU quota, or a cpuset of
// dedicated host CPUs, never a virtual NUMA layout), so it answers as Nova
// does for an instance without one. Below 2.78 the path does not exist.
func (s *Service) serverTopology(w http.ResponseWriter, r *http.Request) {
	if !versionOf(r.Context()).AtLeast(78) {
		writeFault(w, errdefs.NotFound("The resource could not be found."))
		return
	}
	if _, ok := s.loadServer(w, r); !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": []any{}, "pagesize_kb": nil})
}

var (
	hostname290 = regexp.MustCompile(`^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$`)
	fqdn294     = regexp.MustCompile(`^[a-zA-Z0-9-._]*$`)
)

// validHostname checks a requested hostname as Nova's schema: from 2.90
// an RFC 1123 label of 2-63 characters, from 2.94 an FQDN of 1-255.
func validHostname(h string, v apiVersion) error {
	if v.AtLeast(94) {
		if h == "" || len(h) > 255 || !fqdn294.MatchString(h) {
			return errdefs.InvalidArgumentf("Invalid input for field/attribute hostname. Value: %s. It must be 1-255 letters, digits, '-', '.' or '_'.", h)
		}
		return nil
	}
	if len(h) < 2 || len(h) > 63 || !hostname290.MatchString(h) {
		return errdefs.InvalidArgumentf("Invalid input for field/attribute hostname. Value: %s. It must be 2-63 letters, digits or '-', not starting or ending with '-'.", h)
	}
	return nil
}

// hostnameOf is the hostname a new server gets: the requested one (2.90),
// else one made from its display name.
func hostnameOf(requested *string, name string) string {
	if requested != nil {
		return *requested
	}
	return hostnameFor(name)
}
