package portal

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Volumes: the project's block storage volumes (Cinder v3 at
// /v3/{project_id}), attached to and detached from servers through the
// compute API's os-volume_attachments as the openstack CLI does it. The
// user's token decides: another project's volume is Cinder's 404, a
// reader's change its 403 (and the pages disable the buttons for readers).

// Volume is a Cinder volume.
type Volume struct {
	ID          string             `json:"id"`
	Name        string             `json:"name"`
	Status      string             `json:"status"`
	Size        int                `json:"size"`
	Created     string             `json:"created_at"`
	Bootable    string             `json:"bootable"`
	Attachments []VolumeAttachment `json:"attachments"`
	ImageMeta   map[string]string  `json:"volume_image_metadata"`
}

// VolumeAttachment is one of a volume's attachments as Cinder shows it.
type VolumeAttachment struct {
	ServerID string `json:"server_id"`
	Device   string `json:"device"`
}

// Label is the volume's name, its ID when it has none.
func (v Volume) Label() string {
	if v.Name != "" {
		return v.Name
	}
	return v.ID
}

// mountPath says where an attached volume shows inside a Capsule server:
// a device name (/dev/vdb) is mounted at /mnt/<volume id>, a path outside
// /dev is the mount point itself (compute's mountPathOf).
func mountPath(device, volumeID string) string {
	if device != "" && !strings.HasPrefix(device, "/dev/") {
		return device
	}
	return "/mnt/" + volumeID
}

// VolumeLimits are the project's block storage limits and usage.
type VolumeLimits struct {
	MaxVolumes    int `json:"maxTotalVolumes"`
	UsedVolumes   int `json:"totalVolumesUsed"`
	MaxGigabytes  int `json:"maxTotalVolumeGigabytes"`
	UsedGigabytes int `json:"totalGigabytesUsed"`
}

// Full reports whether no volume can be created within the quota.
func (l *VolumeLimits) Full() bool {
	return l.MaxVolumes >= 0 && l.UsedVolumes >= l.MaxVolumes || l.MaxGigabytes >= 0 && l.UsedGigabytes >= l.MaxGigabytes
}

// GBLeft is how many gigabytes a new volume may have (-1: unlimited).
func (l *VolumeLimits) GBLeft() int {
	if l.MaxGigabytes < 0 {
		return -1
	}
	return max(0, l.MaxGigabytes-l.UsedGigabytes)
}

func (s *Server) volumeURL(sess *session, path string) string {
	return s.ep.Volume + "/v3/" + url.PathEscape(sess.ProjectID) + path
}

func (s *Server) volumes(ctx context.Context, sess *session) ([]Volume, error) {
	var body struct {
		Volumes []Volume `json:"volumes"`
	}
	// Cinder lists the token's project (an admin's too, without
	// all_tenants), newest first.
	if _, err := s.up.do(ctx, "volume", sess.Token, http.MethodGet, s.volumeURL(sess, "/volumes/detail?limit=1000"), nil, &body); err != nil {
		return nil, err
	}
	return body.Volumes, nil
}

func (s *Server) volume(ctx context.Context, sess *session, id string) (*Volume, error) {
	var body struct {
		Volume Volume `json:"volume"`
	}
	_, err := s.up.do(ctx, "volume", sess.Token, http.MethodGet, s.volumeURL(sess, "/volumes/"+url.PathEscape(id)), nil, &body)
	return &body.Volume, err
}

func (s *Server) volumeLimits(ctx context.Context, sess *session) (*VolumeLimits, error) {
	var body struct {
		Limits struct {
			Absolute VolumeLimits `json:"absolute"`
		} `json:"limits"`
	}
	_, err := s.up.do(ctx, "volume", sess.Token, http.MethodGet, s.volumeURL(sess, "/limits"), nil, &body)
	return &body.Limits.Absolute, err
}

// serverAttachment is a volume attached to a server, for the server page.
type serverAttachment struct {
	VolumeID string `json:"volumeId"`
	Device   string `json:"device"`
	Name     string `json:"-"`
	Size     int    `json:"-"`
}

// Mount is where the volume shows inside the server.
func (a serverAttachment) Mount() string { return mountPath(a.Device, a.VolumeID) }

func (s *Server) serverVolumes(ctx context.Context, sess *session, id string) ([]serverAttachment, error) {
	var body struct {
		Attachments []serverAttachment `json:"volumeAttachments"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers/"+url.PathEscape(id)+"/os-volume_attachments", nil, &body)
	return body.Attachments, err
}

// volumeRow is a volume in the list, with its server's name.
type volumeRow struct {
	Volume
	Class string
	// Attached are "server name (mount path)" per attachment.
	Attached []volumeAttached
}

type volumeAttached struct {
	ServerID, Server, Mount string
}

type volumesView struct {
	Volumes []volumeRow
	Limits  *VolumeLimits
	Images  []Image
	// The create form after a refusal.
	Name, Size, Image string
	// Served is false when the cloud has no Block Storage API.
	Served bool
}

func volumeClass(status string) string {
	switch status {
	case "available", "in-use":
		return "ok"
	case "error", "error_deleting", "error_extending":
		return "bad"
	}
	return "busy"
}

func (s *Server) volumeRows(ctx context.Context, sess *session, vols []Volume) []volumeRow {
	names := map[string]string{}
	if list, _, err := s.listServers(ctx, sess, "", 1000); err == nil {
		for _, sv := range list {
			names[sv.ID] = sv.Name
		}
	}
	rows := make([]volumeRow, 0, len(vols))
	for _, v := range vols {
		r := volumeRow{Volume: v, Class: volumeClass(v.Status)}
		for _, a := range v.Attachments {
			r.Attached = append(r.Attached, volumeAttached{ServerID: a.ServerID, Server: orID(names, a.ServerID), Mount: mountPath(a.Device, v.ID)})
		}
		rows = append(rows, r)
	}
	return rows
}

func (s *Server) volumeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /volumes", s.authed(s.volumesPage))
	mux.HandleFunc("POST /volumes", s.authed(s.volumeCreatePost))
	mux.HandleFunc("GET /api/volumes", s.authedJSON(s.volumesJSON))
	mux.HandleFunc("GET /volumes/{id}", s.authed(s.volumePage))
	mux.HandleFunc("POST /volumes/{id}/{op}", s.authed(s.volumeOpPost))
	mux.HandleFunc("GET /api/servers/{id}/usage", s.authedJSON(s.usageJSON))
}

// usageJSON is a server's usage history for the server page's charts: the
// compute API's capsule-usage (the cloud keeps it; another project's
// server is its 404).
func (s *Server) usageJSON(w http.ResponseWriter, r *http.Request, sess *session) {
	q := url.Values{"period": {r.URL.Query().Get("period")}}
	var body map[string]any
	if _, err := s.up.do(r.Context(), "compute", sess.Token, http.MethodGet,
		s.ep.Compute+"/servers/"+url.PathEscape(r.PathValue("id"))+"/capsule-usage?"+q.Encode(), nil, &body); err != nil {
		s.failJSON(w, err)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// noVolumes answers when the cloud serves no Block Storage API.
func (s *Server) noVolumes(w http.ResponseWriter, r *http.Request, sess *session) bool {
	if s.ep.Volume != "" {
		return false
	}
	s.render(w, r, http.StatusNotFound, "volumes", view{Title: "Volumes", Nav: "volumes", Sess: sess, Data: volumesView{},
		Error: "This cloud serves no Block Storage API (api.volume_port is 0)."})
	return true
}

func (s *Server) volumesPage(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.noVolumes(w, r, sess) {
		return
	}
	d := volumesView{Size: "1"}
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "volumes"); ok {
		status, errMsg = f.Status, f.Error
		d.Name, d.Size, d.Image = f.Form["name"], f.Form["size"], f.Form["image"]
	}
	vols, err := s.volumes(r.Context(), sess)
	if err != nil {
		s.fail(w, r, sess, "Volumes", err)
		return
	}
	d.Served = true
	d.Volumes = s.volumeRows(r.Context(), sess, vols)
	if l, err := s.volumeLimits(r.Context(), sess); err == nil {
		d.Limits = l
	}
	d.Images, _ = s.images(r.Context(), sess)
	s.render(w, r, status, "volumes", view{Title: "Volumes", Nav: "volumes", Sess: sess, Data: d, Error: errMsg,
		Notice: volumeDone(r.URL.Query().Get("done"))})
}

// volumesJSON is the list's live status: id, status and attachments.
func (s *Server) volumesJSON(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.ep.Volume == "" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "This cloud serves no Block Storage API."})
		return
	}
	vols, err := s.volumes(r.Context(), sess)
	if err != nil {
		s.failJSON(w, err)
		return
	}
	type row struct {
		ID       string           `json:"id"`
		Status   string           `json:"status"`
		Class    string           `json:"class"`
		Size     int              `json:"size"`
		Attached []volumeAttached `json:"attached"`
	}
	out := []row{}
	for _, v := range s.volumeRows(r.Context(), sess, vols) {
		out = append(out, row{ID: v.ID, Status: v.Status, Class: v.Class, Size: v.Size, Attached: v.Attached})
	}
	writeJSON(w, http.StatusOK, map[string]any{"volumes": out})
}

func volumeDone(code string) string {
	return map[string]string{
		"created": "Volume requested: it is listed as creating, then available.",
		"attach":  "Attach requested: the volume turns in-use once it is mounted in the server.",
		"detach":  "Detach requested: the volume turns available once it is unmounted.",
		"extend":  "Extend requested: the volume keeps its data and grows.",
		"deleted": "Volume deleted.",
	}[code]
}

func (s *Server) volumeCreatePost(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.noVolumes(w, r, sess) {
		return
	}
	name, image := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("image")
	sizeText := strings.TrimSpace(r.PostFormValue("size"))
	size, err := strconv.Atoi(sizeText)
	msg := ""
	if err != nil || size < 1 || size > 100000 {
		msg = "The size must be a whole number of gigabytes, 1 or more."
	}
	if msg == "" {
		v := map[string]any{"size": size}
		if name != "" {
			v["name"] = name
		}
		if image != "" {
			v["imageRef"] = image
		}
		var out struct {
			Volume Volume `json:"volume"`
		}
		_, err := s.up.do(r.Context(), "volume", sess.Token, http.MethodPost, s.volumeURL(sess, "/volumes"), map[string]any{"volume": v}, &out)
		if err == nil {
			s.log.Info("portal: volume created", "user", sess.User, "project", sess.Project, "volume", out.Volume.ID, "size", size)
			http.Redirect(w, r, "/volumes?done=created", http.StatusSeeOther)
			return
		}
		if st := statusOf(err); st == http.StatusUnauthorized || st == 0 {
			s.fail(w, r, sess, "Volumes", err)
			return
		}
		msg = messageOf(err)
	}
	s.sess.setFlash(sess, "volumes", flash{Status: http.StatusBadRequest, Error: msg,
		Form: map[string]string{"name": name, "size": sizeText, "image": image}})
	http.Redirect(w, r, "/volumes", http.StatusSeeOther)
}

// volumeView is a volume's page.
type volumeView struct {
	Volume volumeRow
	// Servers are the attach picker's choices: the project's servers the
	// volume is not attached to.
	Servers []ServerView
	Limits  *VolumeLimits
	NewSize int
	// MaxSize is the largest size the quota allows (-1: unlimited).
	MaxSize int
}

func (s *Server) volumePage(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.noVolumes(w, r, sess) {
		return
	}
	id := r.PathValue("id")
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "volume "+id); ok {
		status, errMsg = f.Status, f.Error
	}
	v, err := s.volume(r.Context(), sess, id)
	if err != nil {
		s.fail(w, r, sess, "Volume", err)
		return
	}
	d := volumeView{Volume: s.volumeRows(r.Context(), sess, []Volume{*v})[0], NewSize: v.Size + 1, MaxSize: -1}
	if list, _, err := s.listServers(r.Context(), sess, "", 1000); err == nil {
		in := map[string]bool{}
		for _, a := range v.Attachments {
			in[a.ServerID] = true
		}
		for _, sv := range list {
			if !in[sv.ID] && sv.Status != "DELETED" {
				d.Servers = append(d.Servers, sv)
			}
		}
		sort.SliceStable(d.Servers, func(i, j int) bool { return d.Servers[i].Name < d.Servers[j].Name })
	}
	if l, err := s.volumeLimits(r.Context(), sess); err == nil {
		d.Limits = l
		if l.GBLeft() >= 0 {
			d.MaxSize = v.Size + l.GBLeft()
		}
	}
	s.render(w, r, status, "volume", view{Title: "Volume " + v.Label(), Nav: "volumes", Sess: sess, Data: d, Error: errMsg,
		Notice: volumeDone(r.URL.Query().Get("done"))})
}

// volumeOpPost is attach, detach, extend and delete. attach and detach
// name the server (`server`); `back=server` returns to the server's page
// (its Volumes card) instead of the volume's.
func (s *Server) volumeOpPost(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.noVolumes(w, r, sess) {
		return
	}
	id, op, server := r.PathValue("id"), r.PathValue("op"), r.PostFormValue("server")
	if id == "-" {
		// The server page's attach form picks the volume in a field.
		id = r.PostFormValue("volume")
	}
	back, page := "/volumes/"+url.PathEscape(id), "volume "+id
	if r.PostFormValue("back") == "server" && server != "" {
		back, page = "/servers/"+url.PathEscape(server), "server "+server
	}
	var err error
	msg := ""
	switch op {
	case "attach":
		if server == "" || id == "" {
			msg = "Choose a server and a volume to attach."
			break
		}
		_, err = s.up.do(r.Context(), "compute", sess.Token, http.MethodPost, s.ep.Compute+"/servers/"+url.PathEscape(server)+"/os-volume_attachments",
			map[string]any{"volumeAttachment": map[string]string{"volumeId": id}}, nil)
	case "detach":
		if server == "" {
			msg = "Say which server to detach the volume from."
			break
		}
		_, err = s.up.do(r.Context(), "compute", sess.Token, http.MethodDelete,
			s.ep.Compute+"/servers/"+url.PathEscape(server)+"/os-volume_attachments/"+url.PathEscape(id), nil, nil)
	case "extend":
		n, perr := strconv.Atoi(strings.TrimSpace(r.PostFormValue("new_size")))
		if perr != nil || n < 1 {
			msg = "The new size must be a whole number of gigabytes."
			break
		}
		// At Cinder's base microversion: an available volume only (the
		// page says to detach it first).
		_, err = s.up.do(r.Context(), "volume", sess.Token, http.MethodPost, s.volumeURL(sess, "/volumes/"+url.PathEscape(id)+"/action"),
			map[string]any{"os-extend": map[string]int{"new_size": n}}, nil)
	case "delete":
		_, err = s.up.do(r.Context(), "volume", sess.Token, http.MethodDelete, s.volumeURL(sess, "/volumes/"+url.PathEscape(id)), nil, nil)
		if err == nil {
			s.log.Info("portal: volume deleted", "user", sess.User, "project", sess.Project, "volume", id)
			http.Redirect(w, r, "/volumes?done=deleted", http.StatusSeeOther)
			return
		}
	default:
		s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Sess: sess, Error: "There is no volume action " + strconv.Quote(op) + "."})
		return
	}
	if err != nil {
		st := statusOf(err)
		// Another project's volume or server, an expired token: the page
		// itself, not a message on a page the user may not see.
		if st == http.StatusUnauthorized || st == http.StatusNotFound || st == 0 {
			s.fail(w, r, sess, "Volume", err)
			return
		}
		msg = messageOf(err)
	}
	if msg != "" {
		st := statusOr(err)
		if err == nil {
			st = http.StatusBadRequest
		}
		s.sess.setFlash(sess, page, flash{Status: st, Error: msg})
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	s.log.Info("portal: volume "+op, "user", sess.User, "project", sess.Project, "volume", id, "server", server)
	http.Redirect(w, r, back+"?done="+op, http.StatusSeeOther)
}

// serverVolumes is the server page's Volumes card.
type serverVolumes struct {
	VolumesServed bool
	Volumes       []serverAttachment
	// FreeVolumes are the project's available volumes (the attach picker).
	FreeVolumes []Volume
}

func (s *Server) serverVolumeData(ctx context.Context, sess *session, d *serverData) {
	if s.ep.Volume == "" {
		return
	}
	d.VolumesServed = true
	atts, _ := s.serverVolumes(ctx, sess, d.Server.ID)
	vols, _ := s.volumes(ctx, sess)
	byID := map[string]Volume{}
	for _, v := range vols {
		byID[v.ID] = v
		if v.Status == "available" {
			d.FreeVolumes = append(d.FreeVolumes, v)
		}
	}
	for _, a := range atts {
		if v, ok := byID[a.VolumeID]; ok {
			a.Name, a.Size = v.Label(), v.Size
		} else {
			a.Name = a.VolumeID
		}
		d.Volumes = append(d.Volumes, a)
	}
}
