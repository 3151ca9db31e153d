package compute

import (
	"encoding/json"
	"net/http"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// rescueServer (Nova's rescue, member on their own server): the server's
// host stops its workload and starts a rescue system in its place, in the
// same network namespace (same NICs and addresses), with the server's
// root filesystem read-write at /mnt; unrescue brings the workload back
// with every change made there. The rescue image is rescue_image_ref (an
// image the caller may see) or the server's own. 200 {"adminPass"}: the
// caller's or a generated password, set as root's in the rescue system
// where its image has an /etc/shadow (as on create).
func (s *Service) rescueServer(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	var in map[string]json.RawMessage
	if len(arg) > 0 && string(arg) != "null" {
		if err := json.Unmarshal(arg, &in); err != nil || in == nil {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute rescue. Value: must be an object or null"))
			return
		}
	}
	var pass, ref *string
	for k, v := range in {
		var dst **string
		switch k {
		case "adminPass":
			dst = &pass
		case "rescue_image_ref":
			dst = &ref
		default:
			writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute rescue. Additional properties are not allowed ('%s' was unexpected)", k))
			return
		}
		if err := json.Unmarshal(v, dst); err != nil || *dst == nil {
			writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: must be a string", k))
			return
		}
	}
	if _, ok := beginOnHost(w, inst, lifecycle.ActRescue, "rescue"); !ok {
		return
	}
	vb, err := s.volumeBacked(r.Context(), inst)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	imageID := inst.ImageID
	if vb {
		// Nova rescues volume-backed servers from 2.87 (its boot volume
		// is what the rescue system sees at /mnt), with the image the
		// volume was filled from unless another is named.
		if !versionOf(r.Context()).AtLeast(87) {
			writeFault(w, errdefs.InvalidArgument("Cannot rescue a volume-backed instance"))
			return
		}
		if imageID, err = instance.BootImage(s.st.WithContext(r.Context()), inst.ID); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if ref != nil {
		if _, err := uuid.Parse(*ref); err != nil {
			writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute rescue_image_ref. Value: %s is not a 'uuid'", *ref))
			return
		}
		imageID = *ref
	}
	img, err := s.findImage(r.Context(), imageID)
	if err != nil || img.Status != "active" || img.RegistryRef == "" {
		writeFault(w, errdefs.InvalidArgumentf("Image %s could not be found.", imageID))
		return
	}
	if err := image.Bootable(img); err != nil {
		writeFault(w, err)
		return
	}
	adminPass, passHash, err := s.instancePassword(pass)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.startActionMsg(w, r, inst, protocol.InstanceAction{Action: lifecycle.ActRescue, RescueImage: img.RegistryRef,
		RescuePassHash: passHash}, "rescue"); err != nil {
		return
	}
	if s.opts.NoInstancePassword {
		// Nova answers an empty body then.
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"adminPass": adminPass})
}
