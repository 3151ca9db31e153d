package compute

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// ConsoleIssuer hands out single-use console URLs (package console's
// Proxy) of type "serial" (a ws:// URL) or "novnc" (an http:// URL of
// the proxy's HTML5 console page).
type ConsoleIssuer interface {
	Issue(ctx context.Context, instanceID, projectID, consoleType string) (string, error)
}

// Remote consoles: Capsule has the serial console (a shell on a terminal
// in the server, through the console proxy) and, for vnc/novnc, a page of
// the proxy that runs a terminal on that console in the browser (a
// container has no framebuffer). Every other graphical type is a console
// type this cloud does not enable, which Nova answers with 400
// "Unavailable console type".

// issuedTypes are the console types the proxy gives URLs for.
var issuedTypes = map[string]bool{"serial": true, "novnc": true}

// consoleTypes are the protocol -> types Nova's schema accepts (2.6, mks
// from 2.8).
var consoleTypes = map[string][]string{
	"vnc": {"novnc", "xvpvnc"}, "spice": {"spice-html5"}, "rdp": {"rdp-html5"}, "serial": {"serial"}, "mks": {"webmks"},
}

// createRemoteConsole is POST /servers/{id}/remote-consoles (2.6).
func (s *Service) createRemoteConsole(w http.ResponseWriter, r *http.Request) {
	if !versionOf(r.Context()).AtLeast(6) {
		writeFault(w, errdefs.NotFound("The resource could not be found."))
		return
	}
	var body struct {
		RemoteConsole *struct {
			Protocol string `json:"protocol"`
			Type     string `json:"type"`
		} `json:"remote_console"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	rc := body.RemoteConsole
	if rc == nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute remote_console. Value: None. 'remote_console' is a required property"))
		return
	}
	types, ok := consoleTypes[rc.Protocol]
	if !ok || (rc.Protocol == "mks" && !versionOf(r.Context()).AtLeast(8)) {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute protocol. Value: %s. %q is not one of ['vnc', 'spice', 'rdp', 'serial']", rc.Protocol, rc.Protocol))
		return
	}
	known := false
	for _, t := range types {
		known = known || t == rc.Type
	}
	if !known {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute type. Value: %s. Invalid console type %s for protocol %s", rc.Type, rc.Type, rc.Protocol))
		return
	}
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	url, ok := s.consoleURL(w, r, inst, rc.Type)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"remote_console": map[string]any{"protocol": rc.Protocol, "type": rc.Type, "url": url}})
}

// consoleAction is the pre-2.6 actions os-getSerialConsole,
// os-getVNCConsole and friends.
func (s *Service) consoleAction(w http.ResponseWriter, r *http.Request, inst *store.Instance, name string, arg json.RawMessage) {
	var opt struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(arg, &opt); err != nil || opt.Type == "" {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. 'type' is a required property", name))
		return
	}
	switch name {
	case "os-getVNCConsole":
		// Nova's schema: novnc or xvpvnc.
		if opt.Type != "novnc" && opt.Type != "xvpvnc" {
			writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute type. Value: %s. %q is not one of ['novnc', 'xvpvnc']", opt.Type, opt.Type))
			return
		}
	case "os-getSerialConsole":
		if opt.Type != "serial" {
			writeFault(w, errdefs.InvalidArgumentf("Unavailable console type %s.", opt.Type))
			return
		}
	default: // SPICE, RDP: not enabled
		writeFault(w, errdefs.InvalidArgumentf("Unavailable console type %s.", opt.Type))
		return
	}
	url, ok := s.consoleURL(w, r, inst, opt.Type)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"console": map[string]any{"type": opt.Type, "url": url}})
}

// consoleURL issues a console URL of type typ for inst, or answers why
// not: 400 for a type the proxy does not serve (or no proxy), 409 for a
// server that is not running.
func (s *Service) consoleURL(w http.ResponseWriter, r *http.Request, inst *store.Instance, typ string) (string, bool) {
	if !issuedTypes[typ] || s.opts.Consoles == nil {
		writeFault(w, errdefs.InvalidArgumentf("Unavailable console type %s.", typ))
		return "", false
	}
	if inst.VMState != lifecycle.Active || inst.Host == "" {
		writeFault(w, errdefs.Conflictf("Instance %s is not ready.", inst.ID))
		return "", false
	}
	url, err := s.opts.Consoles.Issue(r.Context(), inst.ID, inst.ProjectID, typ)
	if err != nil {
		s.fail(w, r, err)
		return "", false
	}
	return url, true
}
