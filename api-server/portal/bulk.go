package portal

import (
	"net/http"
	"strconv"
)

// Bulk actions on the servers list: the servers ticked in the list are
// started, stopped or deleted after one confirmation page (a form, so it
// works without script and a link alone never acts); each server's
// answer is reported, a refusal with the API's message.

// bulkActions are the actions the list offers for several servers.
var bulkActions = map[string]string{"start": "Start", "stop": "Stop", "delete": "Delete"}

// bulkMax bounds the servers of one bulk request (the list's largest page).
const bulkMax = 200

type bulkItem struct {
	ID, Name string
	Err      string // the API's refusal, "" when it accepted
	Status   int    // the refusal's HTTP status
}

type bulkData struct {
	Action, Verb string
	Items        []bulkItem
	Done         bool // the results, not the confirmation
	Refused      int
}

func (s *Server) bulkPost(w http.ResponseWriter, r *http.Request, sess *session) {
	action := r.PostFormValue("action")
	verb, ok := bulkActions[action]
	if !ok {
		s.render(w, r, http.StatusBadRequest, "error", view{Title: "Unknown action", Nav: "servers", Sess: sess,
			Error: "There is no bulk action " + strconv.Quote(action) + "."})
		return
	}
	ids := dedupe(r.PostForm["id"])
	if len(ids) == 0 || len(ids) > bulkMax {
		s.render(w, r, http.StatusBadRequest, "error", view{Title: verb + " servers", Nav: "servers", Sess: sess,
			Error: "Tick between 1 and " + strconv.Itoa(bulkMax) + " servers in the list first."})
		return
	}
	d := bulkData{Action: action, Verb: verb}
	if r.PostFormValue("confirmed") != "yes" {
		// The confirmation names each server (the API's name: the
		// project's own servers only; another's is not found).
		for _, id := range ids {
			it := bulkItem{ID: id, Name: id}
			if sv, err := s.getServer(r.Context(), sess, id); err != nil {
				it.Err, it.Status = messageOf(err), statusOf(err)
			} else {
				it.Name = sv.Name
			}
			d.Items = append(d.Items, it)
		}
		s.render(w, r, http.StatusOK, "bulk", view{Title: verb + " servers", Nav: "servers", Sess: sess, Data: d})
		return
	}
	d.Done = true
	for _, id := range ids {
		it := bulkItem{ID: id, Name: r.PostFormValue("name-" + id)}
		if it.Name == "" {
			it.Name = id
		}
		if err := s.serverAction(r.Context(), sess, id, action, ActionArgs{}); err != nil {
			it.Err, it.Status = messageOf(err), statusOf(err)
			d.Refused++
		}
		d.Items = append(d.Items, it)
	}
	s.log.Info("portal: bulk server action", "user", sess.User, "project", sess.Project, "action", action,
		"servers", len(ids), "refused", d.Refused)
	st := http.StatusOK
	if d.Refused == len(ids) {
		st = http.StatusConflict
	}
	s.render(w, r, st, "bulk", view{Title: verb + " servers", Nav: "servers", Sess: sess, Data: d})
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range in {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
