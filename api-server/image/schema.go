package image

import (
	"net/http"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
)

func nullable(t string, extra map[string]any) map[string]any {
	m := map[string]any{"type": []any{t, "null"}}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// imageSchemaDoc is a trimmed copy of Glance's image schema: the base
// attributes and "additionalProperties": string.
func imageSchemaDoc() map[string]any {
	ro := map[string]any{"readOnly": true}
	str := func(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }
	props := map[string]any{
		"id":               map[string]any{"type": "string", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$", "description": "An identifier for the image"},
		"name":             nullable("string", map[string]any{"maxLength": 255, "description": "Descriptive name for the image"}),
		"status":           map[string]any{"type": "string", "readOnly": true, "enum": []string{"queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"}},
		"visibility":       map[string]any{"type": "string", "enum": []string{"community", "public", "private", "shared"}},
		"protected":        map[string]any{"type": "boolean"},
		"os_hidden":        map[string]any{"type": "boolean"},
		"owner":            nullable("string", map[string]any{"maxLength": 255}),
		"checksum":         nullable("string", map[string]any{"readOnly": true, "maxLength": 32}),
		"os_hash_algo":     nullable("string", map[string]any{"readOnly": true, "maxLength": 64}),
		"os_hash_value":    nullable("string", map[string]any{"readOnly": true, "maxLength": 128}),
		"min_ram":          map[string]any{"type": "integer"},
		"min_disk":         map[string]any{"type": "integer"},
		"size":             nullable("integer", ro),
		"virtual_size":     nullable("integer", ro),
		"container_format": nullable("string", map[string]any{"enum": append([]any{nil}, anyList(containerFormats)...)}),
		"disk_format":      nullable("string", map[string]any{"enum": append([]any{nil}, anyList(diskFormats)...)}),
		"created_at":       map[string]any{"type": "string", "readOnly": true},
		"updated_at":       map[string]any{"type": "string", "readOnly": true},
		"tags":             map[string]any{"type": "array", "items": map[string]any{"type": "string", "maxLength": 255}},
		"self":             map[string]any{"type": "string", "readOnly": true},
		"file":             map[string]any{"type": "string", "readOnly": true},
		"schema":           map[string]any{"type": "string", "readOnly": true},
		"direct_url":       str("URL to access the image file kept in external store"),
		"locations":        map[string]any{"type": "array", "items": map[string]any{"type": "object"}},
	}
	return map[string]any{
		"name":                 "image",
		"properties":           props,
		"additionalProperties": map[string]any{"type": "string"},
		"links": []map[string]string{
			{"rel": "self", "href": "{self}"},
			{"rel": "enclosure", "href": "{file}"},
			{"rel": "describedby", "href": "{schema}"},
		},
	}
}

func anyList(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (s *Service) imageSchema(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, imageSchemaDoc())
}

func (s *Service) imagesSchema(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"name": "images",
		"properties": map[string]any{
			"images": map[string]any{"type": "array", "items": imageSchemaDoc()},
			"schema": map[string]any{"type": "string"},
			"first":  map[string]any{"type": "string"},
			"next":   map[string]any{"type": "string"},
		},
		"links": []map[string]string{
			{"rel": "first", "href": "{first}"},
			{"rel": "next", "href": "{next}"},
			{"rel": "describedby", "href": "{schema}"},
		},
	})
}
