package portal

import (
	"context"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// Keypair is one of the user's Nova keypairs.
type Keypair struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
	Type        string `json:"type"`
}

// keypairMicroversion asks for keypair types (2.2) and 201/204 codes.
const keypairMicroversion = "2.2"

func (s *Server) keypairs(ctx context.Context, sess *session) ([]Keypair, error) {
	var body struct {
		Keypairs []struct {
			Keypair Keypair `json:"keypair"`
		} `json:"keypairs"`
	}
	if _, err := s.up.doAt(ctx, "compute", keypairMicroversion, sess.Token, http.MethodGet, s.ep.Compute+"/os-keypairs", nil, &body); err != nil {
		return nil, err
	}
	out := make([]Keypair, 0, len(body.Keypairs))
	for _, k := range body.Keypairs {
		out = append(out, k.Keypair)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// createKeypair imports publicKey under name, or has the cloud generate a
// key when publicKey is empty and returns its private half.
func (s *Server) createKeypair(ctx context.Context, sess *session, name, publicKey string) (string, error) {
	kp := map[string]any{"name": name}
	if publicKey != "" {
		kp["public_key"] = publicKey
	}
	var body struct {
		Keypair struct {
			PrivateKey string `json:"private_key"`
		} `json:"keypair"`
	}
	_, err := s.up.doAt(ctx, "compute", keypairMicroversion, sess.Token, http.MethodPost, s.ep.Compute+"/os-keypairs",
		map[string]any{"keypair": kp}, &body)
	return body.Keypair.PrivateKey, err
}

func (s *Server) deleteKeypair(ctx context.Context, sess *session, name string) error {
	_, err := s.up.doAt(ctx, "compute", keypairMicroversion, sess.Token, http.MethodDelete, s.ep.Compute+"/os-keypairs/"+url.PathEscape(name), nil, nil)
	return err
}

// keypairsData is the key pairs page: the user's keypairs, the import
// form as last sent, and a generated private key shown once.
type keypairsData struct {
	Keypairs   []Keypair
	Name       string
	PublicKey  string
	PrivateKey string
	Created    string
}

func (s *Server) keypairsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	if f, ok := s.sess.takeFlash(sess, "keypairs"); ok {
		s.renderKeypairs(w, r, sess, f.Status, keypairsData{Name: f.Form["name"], PublicKey: f.Form["public_key"]}, f.Error, "")
		return
	}
	s.renderKeypairs(w, r, sess, http.StatusOK, keypairsData{}, "", doneMessage(r.URL.Query().Get("done")))
}

// keypairRefused sends the browser back to the form with the refusal
// and what was typed (POST-redirect-GET: a reload does not post again).
func (s *Server) keypairRefused(w http.ResponseWriter, r *http.Request, sess *session, status int, d keypairsData, msg string) {
	s.sess.setFlash(sess, "keypairs", flash{Status: status, Error: msg, Form: map[string]string{"name": d.Name, "public_key": d.PublicKey}})
	http.Redirect(w, r, "/keypairs", http.StatusSeeOther)
}

func (s *Server) renderKeypairs(w http.ResponseWriter, r *http.Request, sess *session, status int, d keypairsData, errMsg, notice string) {
	kps, err := s.keypairs(r.Context(), sess)
	if err != nil {
		s.fail(w, r, sess, "Key pairs", err)
		return
	}
	d.Keypairs = kps
	s.render(w, r, status, "keypairs", view{Title: "Key pairs", Nav: "keypairs", Sess: sess, Data: d, Error: errMsg, Notice: notice})
}

// keypairsPost imports or generates a keypair. A generated key's private
// half is shown on the answer page only: the cloud does not keep it.
func (s *Server) keypairsPost(w http.ResponseWriter, r *http.Request, sess *session) {
	d := keypairsData{Name: strings.TrimSpace(r.PostFormValue("name")), PublicKey: strings.TrimSpace(r.PostFormValue("public_key"))}
	if d.Name == "" {
		s.keypairRefused(w, r, sess, http.StatusBadRequest, d, "Give the key pair a name.")
		return
	}
	priv, err := s.createKeypair(r.Context(), sess, d.Name, d.PublicKey)
	var ae *APIError
	switch {
	case err == nil:
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized && ae.Status < 500:
		s.keypairRefused(w, r, sess, ae.Status, d, ae.Message)
		return
	default:
		s.fail(w, r, sess, "Key pairs", err)
		return
	}
	s.log.Info("portal: keypair created", "user", sess.User, "name", d.Name, "generated", priv != "")
	if priv == "" {
		http.Redirect(w, r, "/keypairs?done=keypair", http.StatusSeeOther)
		return
	}
	s.renderKeypairs(w, r, sess, http.StatusCreated, keypairsData{PrivateKey: priv, Created: d.Name}, "",
		"Key pair "+d.Name+" created. Save its private key now: it is shown only this once.")
}

func (s *Server) keypairDeletePost(w http.ResponseWriter, r *http.Request, sess *session) {
	if err := s.deleteKeypair(r.Context(), sess, r.PathValue("name")); err != nil {
		s.fail(w, r, sess, "Key pairs", err)
		return
	}
	http.Redirect(w, r, "/keypairs?done=keypair-deleted", http.StatusSeeOther)
}

// pemURL is a generated private key as a data: URL, what the page's
// download link saves as <name>.pem: the key travels in this one answer
// and is kept nowhere on the server side.
func pemURL(key string) template.URL {
	return template.URL("data:application/x-pem-file;base64," + base64.StdEncoding.EncodeToString([]byte(key)))
}
