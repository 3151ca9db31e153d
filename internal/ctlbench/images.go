package ctlbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/store"
)

// SeedImages adds n images: 90 % private images of the bench project, 5 %
// public ones of another, the rest other projects' private images except
// every 10th of them shared with the bench project (membership accepted);
// every 7th image has additional properties and tags.
func SeedImages(ctx context.Context, st *store.Store, n int) error {
	db := st.WithContext(ctx)
	now := time.Now().UTC()
	const batch = 500
	for start := 0; start < n; start += batch {
		var imgs []store.Image
		var members []store.ImageMember
		for i := start; i < min(start+batch, n); i++ {
			at := now.Add(time.Duration(i-n) * time.Second)
			size := int64(1<<20 + i)
			img := store.Image{ID: uuid.NewString(), Name: fmt.Sprintf("bench-%05d", i), Owner: benchProject,
				Visibility: image.VisibilityPrivate, Status: image.StatusActive, ContainerFormat: "docker", DiskFormat: "raw",
				Size: &size, Checksum: fmt.Sprintf("%032x", i), RegistryRef: fmt.Sprintf("127.0.0.1:5050/capsule/bench:%d", i),
				CreatedAt: at, UpdatedAt: at}
			switch r := i % 100; {
			case r >= 95:
				img.Owner, img.Visibility = "p-admin", image.VisibilityPublic
			case r >= 90:
				img.Owner = "p-other"
				if r == 90 {
					img.Visibility = image.VisibilityShared
					members = append(members, store.ImageMember{ImageID: img.ID, MemberID: benchProject,
						Status: image.MemberAccepted, CreatedAt: at, UpdatedAt: at})
				}
			}
			if i%7 == 0 {
				img.Properties = `{"image_type":"snapshot","os_distro":"busybox","tags":"[\"bench\",\"web\"]"}`
			}
			imgs = append(imgs, img)
		}
		if err := db.CreateInBatches(imgs, 250).Error; err != nil {
			return fmt.Errorf("bench: seed images: %w", err)
		}
		if len(members) > 0 {
			if err := db.Create(&members).Error; err != nil {
				return fmt.Errorf("bench: seed image members: %w", err)
			}
		}
	}
	return nil
}

// ListImages seeds o.Images images on st (a scratch store) and times GET
// /v2/images?limit=o.Limit through the Image API's real handlers over
// HTTP, as List does for servers. The member sees its own, the public and
// the shared images; an admin (o.Admin) every image.
func ListImages(ctx context.Context, st *store.Store, o ListOptions) (ListResult, error) {
	res := ListResult{Servers: o.Images, Limit: o.Limit, Requests: o.Requests}
	if err := SeedImages(ctx, st, o.Images); err != nil {
		return res, err
	}
	want := 0
	for i := range o.Images {
		if r := i % 100; o.Admin || r < 90 || r >= 95 || r == 90 {
			want++
		}
	}
	svc := image.New(st, image.Options{Validator: benchValidator{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	token := "member"
	if o.Admin {
		token = "admin"
	}
	page := func(marker string) ([]string, string, time.Duration, error) {
		url := fmt.Sprintf("%s/v2/images?limit=%d", srv.URL, o.Limit)
		if marker != "" {
			url += "&marker=" + marker
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, "", 0, err
		}
		req.Header.Set("X-Auth-Token", token)
		t0 := time.Now()
		resp, err := srv.Client().Do(req)
		if err != nil {
			return nil, "", 0, err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		took := time.Since(t0)
		var body struct {
			Images []struct {
				ID string `json:"id"`
			} `json:"images"`
			Next string `json:"next"`
		}
		if err == nil {
			err = json.Unmarshal(raw, &body)
		}
		if resp.StatusCode != http.StatusOK || err != nil {
			return nil, "", 0, fmt.Errorf("bench: GET %s: status %d, decode %v", url, resp.StatusCode, err)
		}
		ids := make([]string, len(body.Images))
		for i, img := range body.Images {
			ids[i] = img.ID
		}
		next := ""
		if body.Next != "" && len(ids) > 0 {
			next = ids[len(ids)-1]
		}
		return ids, next, took, nil
	}
	return walkAndTime(res, want, o.Requests, "image", page)
}
