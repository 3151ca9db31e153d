package portal

import (
	"net/http"
	"time"
)

// switchProjectPost re-scopes the session to another project of the
// user's: Keystone's token method trades the session's token for one on
// that project (same user, same expiry), and the browser gets a new
// session ID for it. Only projects the user has a role on are offered;
// Keystone refuses any other.
func (s *Server) switchProjectPost(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PostFormValue("project")
	known := false
	for _, p := range sess.Projects {
		known = known || p.ID == id
	}
	if !known {
		s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Sess: sess,
			Error: "You have no role on that project."})
		return
	}
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"token"}, "token": map[string]string{"id": sess.Token}},
		"scope":    map[string]any{"project": map[string]string{"id": id}},
	}}
	next, err := s.newSession(withClientAddress(r.Context(), r), body)
	if err != nil {
		s.fail(w, r, sess, "Switch project", err)
		return
	}
	if max := time.Now().Add(maxSessionTTL); next.Expires.After(max) {
		next.Expires = max
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sess.remove(c.Value)
	}
	setCookie(w, r, sessionCookie, s.sess.add(next), next.Expires)
	s.log.Info("portal: project switched", "user", next.User, "from", sess.Project, "to", next.Project)
	http.Redirect(w, r, "/servers?done=switched", http.StatusSeeOther)
}
