package docker

import (
	"container/list"
	"sync"
)

// The shadow cache's bounds: the images it remembers (least recently used
// first out) and the largest /etc/shadow it keeps (a larger one is read
// from the new container at every create).
const (
	shadowCacheImages   = 64
	shadowCacheMaxBytes = 64 << 10
)

// imageShadow is what an image's /etc/shadow is, as a new disk of it has
// it: present (a regular file: its content, mode and owner, as seen in the
// container) or not, and then why not.
type imageShadow struct {
	present  bool
	reason   string // !present: why the disk cannot hold a root password
	content  []byte
	mode     int64
	uid, gid int
}

// shadowCache remembers the /etc/shadow of images by image ID, so that a
// build's adminPass costs no copy of the file out of each new container.
// The ID is the digest of the image's config, which names its layers:
// what an ID's disk holds never changes (a tag does: it is never the key).
// A container dockerd has just created and never started has its image's
// /etc/shadow exactly: docker's init layer writes /etc/hosts,
// /etc/hostname, /etc/resolv.conf, /etc/mtab, /.dockerenv and mount
// points (/dev, /proc, /sys), never /etc/shadow. The zero value is ready
// for use.
type shadowCache struct {
	mu    sync.Mutex
	order *list.List // of *shadowCacheItem, most recently used first
	items map[string]*list.Element
}

type shadowCacheItem struct {
	imageID string
	shadow  imageShadow
}

// get returns image imageID's /etc/shadow, if known.
func (c *shadowCache) get(imageID string) (imageShadow, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[imageID]
	if !ok {
		return imageShadow{}, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*shadowCacheItem).shadow, true
}

// put remembers s as image imageID's /etc/shadow, forgetting the least
// recently used image beyond shadowCacheImages. A file larger than
// shadowCacheMaxBytes is not kept (nor is an empty image ID).
func (c *shadowCache) put(imageID string, s imageShadow) {
	if imageID == "" || len(s.content) > shadowCacheMaxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.items == nil {
		c.items = map[string]*list.Element{}
		c.order = list.New()
	}
	if el, ok := c.items[imageID]; ok {
		el.Value.(*shadowCacheItem).shadow = s
		c.order.MoveToFront(el)
		return
	}
	c.items[imageID] = c.order.PushFront(&shadowCacheItem{imageID: imageID, shadow: s})
	for c.order.Len() > shadowCacheImages {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*shadowCacheItem).imageID)
	}
}

// len is the number of images remembered.
func (c *shadowCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}
