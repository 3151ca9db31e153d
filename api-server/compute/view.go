package compute

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

const (
	timeFmt    = "2006-01-02T15:04:05Z"
	usageFmt   = "2006-01-02T15:04:05.000000" // OS-SRV-USG: no zone (gophercloud JSONRFC3339MilliNoZ)
	actionFmt  = "2006-01-02T15:04:05.000000"
	serviceFmt = "2006-01-02T15:04:05.000000"
)

func link(rel, href string) map[string]string { return map[string]string{"rel": rel, "href": href} }

func (s *Service) links(r *http.Request, coll, id string) []map[string]string {
	base := s.baseURL(r)
	return []map[string]string{link("self", base+"/v2.1/"+coll+"/"+id), link("bookmark", base+"/"+coll+"/"+id)}
}

// hostID is Nova's opaque per-project host id: sha224(project + host).
func hostID(projectID, host string) string {
	if host == "" {
		return ""
	}
	return fmt.Sprintf("%x", sha256.Sum224([]byte(projectID+host)))
}

func jsonMap(s string) map[string]string {
	m := map[string]string{}
	if s != "" {
		_ = json.Unmarshal([]byte(s), &m)
	}
	return m
}

// viewKind selects which of Nova's server views to render.
type viewKind int

const (
	viewFull  viewKind = iota // show / detail
	viewBasic                 // PUT and rebuild responses below 2.75
)

func instanceName(id string) string {
	if len(id) >= 8 {
		return "instance-" + id[:8]
	}
	return "instance-" + id
}

// serverView renders an instance as Nova does at the request's microversion.
func (s *Service) serverView(r *http.Request, inst *store.Instance, kind viewKind) map[string]any {
	return s.serverViewWith(r, inst, kind, nil)
}

// viewBatch is what the views of a page of servers need beyond their rows,
// loaded for the whole page in a few queries (see loadViewBatch) instead
// of a few per server.
type viewBatch struct {
	nics       map[string][]serverNIC // by instance id
	groupNames map[string]string      // security groups' names by id
	hostStatus map[string]string      // by host
	// volumes are the servers' volume attachments, by instance id.
	volumes map[string][]store.VolumeAttachment
}

// loadViewBatch loads the NICs of insts and, for an admin, their hosts'
// status. On a database error it returns nil: the views then load their
// own (slower, same answer).
func (s *Service) loadViewBatch(ctx context.Context, insts []store.Instance) *viewBatch {
	if len(insts) == 0 {
		return nil
	}
	b := &viewBatch{nics: map[string][]serverNIC{}}
	projectOf := make(map[string]string, len(insts))
	ids := make([]string, 0, len(insts))
	hosts := map[string]bool{}
	for i := range insts {
		projectOf[insts[i].ID] = insts[i].ProjectID
		ids = append(ids, insts[i].ID)
		if insts[i].Host != "" {
			hosts[insts[i].Host] = true
		}
	}
	// One query with the names it needs joined in: a client polling a
	// server pays every query of this at every GET.
	sp, err := s.st.PortsOfServers(ctx, ids)
	if err != nil {
		s.log.Warn("ports of servers", "error", err)
		return nil
	}
	ports, names := sp.Ports, sp.NetworkNames
	b.groupNames = sp.GroupNames
	for _, p := range ports {
		if projectOf[p.DeviceID] != p.ProjectID {
			continue // not the server's NIC (see store.ServerPorts)
		}
		name := names[p.NetworkID]
		if name == "" {
			name = p.NetworkID
		}
		b.nics[p.DeviceID] = append(b.nics[p.DeviceID], serverNIC{port: p, netName: name})
	}
	var atts []store.VolumeAttachment
	if err := s.st.WithContext(ctx).Where("instance_id IN ?", ids).Order("created_at, id").Find(&atts).Error; err != nil {
		s.log.Warn("volume attachments of servers", "error", err)
		return nil
	}
	b.volumes = map[string][]store.VolumeAttachment{}
	for _, a := range atts {
		b.volumes[a.InstanceID] = append(b.volumes[a.InstanceID], a)
	}
	if creds := auth.FromContext(ctx); creds != nil && creds.IsAdmin() && len(hosts) > 0 {
		var svcs []store.Service
		if err := s.st.WithContext(ctx).Where("host IN ? AND binary_name = ?", slices.Collect(maps.Keys(hosts)),
			store.ComputeBinary).Find(&svcs).Error; err != nil {
			s.log.Warn("hosts of servers", "error", err)
			return nil
		}
		b.hostStatus = make(map[string]string, len(hosts))
		for h := range hosts {
			b.hostStatus[h] = "UNKNOWN"
		}
		for i := range svcs {
			b.hostStatus[svcs[i].Host] = s.statusOf(&svcs[i])
		}
	}
	return b
}

// serverViewWith is serverView taking what it can from b (nil: nothing).
func (s *Service) serverViewWith(r *http.Request, inst *store.Instance, kind viewKind, b *viewBatch) map[string]any {
	v := versionOf(r.Context())
	creds := auth.FromContext(r.Context())
	isAdmin := creds != nil && creds.IsAdmin()
	vm := inst.VMState
	task := inst.TaskState
	status := lifecycle.Status(vm, task)

	out := map[string]any{
		"id": inst.ID, "name": inst.Name, "status": status, "tenant_id": inst.ProjectID, "user_id": inst.UserID,
		"created": inst.CreatedAt.UTC().Format(timeFmt), "updated": inst.UpdatedAt.UTC().Format(timeFmt),
		"hostId": hostID(inst.ProjectID, inst.Host), "metadata": jsonMap(inst.Metadata),
		"links": s.links(r, "servers", inst.ID), "accessIPv4": inst.AccessIPv4, "accessIPv6": inst.AccessIPv6,
		"OS-DCF:diskConfig": "MANUAL", "addresses": nil,
	}
	if b != nil {
		out["addresses"] = addressesFrom(b.nics[inst.ID], kind == viewFull)
	} else {
		out["addresses"] = s.addressesOf(r.Context(), inst, kind == viewFull)
	}
	if inst.ImageID == "" {
		out["image"] = ""
	} else {
		base := s.baseURL(r)
		out["image"] = map[string]any{"id": inst.ImageID, "links": []map[string]string{link("bookmark", base+"/images/"+inst.ImageID)}}
	}
	if v.AtLeast(47) {
		fl := map[string]any{"original_name": inst.FlavorName, "vcpus": inst.VCPUs, "ram": inst.MemoryMB,
			"disk": inst.RootGB, "ephemeral": 0, "swap": 0}
		if isAdmin {
			fl["extra_specs"] = jsonMap(inst.ExtraSpecs)
		}
		out["flavor"] = fl
	} else {
		out["flavor"] = map[string]any{"id": inst.FlavorID,
			"links": []map[string]string{link("bookmark", s.baseURL(r)+"/flavors/"+inst.FlavorID)}}
	}
	switch status {
	case "ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING":
		progress := 0
		if status == "ACTIVE" {
			progress = 100
		}
		out["progress"] = progress
	}
	if (status == "ERROR" || status == "DELETED") && inst.FaultMessage != "" {
		// Tempest requires "created"; a fault recorded without a time
		// dates from the instance's last update.
		created := inst.UpdatedAt
		if inst.FaultAt != nil {
			created = *inst.FaultAt
		}
		f := map[string]any{"code": inst.FaultCode, "message": inst.FaultMessage, "created": created.UTC().Format(timeFmt)}
		if isAdmin && inst.FaultDetails != "" {
			f["details"] = inst.FaultDetails
		}
		out["fault"] = f
	}
	if v.AtLeast(9) {
		out["locked"] = inst.Locked
	}
	if v.AtLeast(19) {
		out["description"] = inst.Description
	}
	if v.AtLeast(26) {
		out["tags"] = store.TagsOf(inst)
	}
	if v.AtLeast(73) {
		var reason any
		if inst.Locked && inst.LockedReason != "" {
			reason = inst.LockedReason
		}
		out["locked_reason"] = reason
	}
	if v.AtLeast(63) {
		// Capsule verifies no image signatures, so no server has
		// trusted certificates (a create asking for them is refused).
		out["trusted_image_certificates"] = nil
	}
	if kind == viewBasic {
		return out
	}
	out["key_name"] = inst.KeyName
	// Omitted when the server has none (no NIC, or none with a group), as Nova.
	var sgs []map[string]string
	if b != nil {
		sgs = groupNamesOf(b.nics[inst.ID], b.groupNames)
	} else {
		sgs = s.securityGroupNames(r.Context(), s.serverNICs(r.Context(), inst))
	}
	if len(sgs) > 0 {
		out["security_groups"] = sgs
	}
	out["config_drive"] = ""
	if inst.ConfigDrive {
		out["config_drive"] = "True" // Nova's string
	}
	out["OS-EXT-AZ:availability_zone"] = inst.AvailabilityZone
	out["OS-SRV-USG:launched_at"] = usageTime(inst.LaunchedAt)
	out["OS-SRV-USG:terminated_at"] = usageTime(inst.TerminatedAt)
	out["OS-EXT-STS:vm_state"] = string(vm)
	if task == lifecycle.NoTask {
		out["OS-EXT-STS:task_state"] = nil
	} else {
		out["OS-EXT-STS:task_state"] = string(task)
	}
	out["OS-EXT-STS:power_state"] = inst.PowerState
	out["os-extended-volumes:volumes_attached"] = s.volumesAttached(r.Context(), inst, b)
	if v.AtLeast(90) && !isAdmin {
		// 2.90: the hostname is everyone's (admins get it below).
		out["OS-EXT-SRV-ATTR:hostname"] = inst.Hostname
	}
	if v.AtLeast(96) {
		// 2.96: the zone the server is pinned to (asked for at create
		// or unshelve), null when the scheduler may choose any.
		var pinned any
		if inst.RequestedZone != "" {
			pinned = inst.RequestedZone
		}
		out["pinned_availability_zone"] = pinned
	}
	if isAdmin {
		var host any
		if inst.Host != "" {
			host = inst.Host
		}
		out["OS-EXT-SRV-ATTR:host"] = host
		out["OS-EXT-SRV-ATTR:hypervisor_hostname"] = host
		out["OS-EXT-SRV-ATTR:instance_name"] = instanceName(inst.ID)
		if v.AtLeast(3) {
			out["OS-EXT-SRV-ATTR:reservation_id"] = inst.ReservationID
			out["OS-EXT-SRV-ATTR:launch_index"] = inst.LaunchIndex
			out["OS-EXT-SRV-ATTR:hostname"] = inst.Hostname
			out["OS-EXT-SRV-ATTR:kernel_id"] = ""
			out["OS-EXT-SRV-ATTR:ramdisk_id"] = ""
			out["OS-EXT-SRV-ATTR:root_device_name"] = "/dev/sda"
			var ud any
			if inst.UserData != "" {
				ud = inst.UserData
			}
			out["OS-EXT-SRV-ATTR:user_data"] = ud
		}
		if v.AtLeast(16) {
			if st, ok := b.statusOf(inst.Host); ok {
				out["host_status"] = st
			} else {
				out["host_status"] = s.hostStatus(r, inst.Host)
			}
		}
	}
	return out
}

// statusOf is the batch's host_status of host; ok is false when the batch
// has none (no batch, or not loaded).
func (b *viewBatch) statusOf(host string) (string, bool) {
	if host == "" {
		return "", true
	}
	if b == nil || b.hostStatus == nil {
		return "", false
	}
	st, ok := b.hostStatus[host]
	return st, ok
}

func usageTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC().Format(usageFmt)
}

// hostStatus is UP/DOWN/MAINTENANCE/"" for the 2.16 host_status field.
func (s *Service) hostStatus(r *http.Request, host string) string {
	if host == "" {
		return ""
	}
	var svc store.Service
	err := s.st.WithContext(r.Context()).Where("host = ? AND binary_name = ?", host, store.ComputeBinary).First(&svc).Error
	if err != nil {
		return "UNKNOWN"
	}
	return s.statusOf(&svc)
}

// statusOf is host_status of a host whose service row is svc.
func (s *Service) statusOf(svc *store.Service) string {
	if svc.Disabled {
		return "MAINTENANCE"
	}
	if s.serviceUp(svc) {
		return "UP"
	}
	return "DOWN"
}

func (s *Service) serviceUp(svc *store.Service) bool {
	return !svc.ForcedDown && svc.LastHeartbeat != nil && s.opts.Now().Sub(*svc.LastHeartbeat) <= s.opts.ServiceDownTime
}
