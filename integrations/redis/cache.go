package redis

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Cache adapts a go-redis v9 client to the WeCom library's cache.Cache,
// so every replica shares one access token. Values are stored as strings
// (the library caches token strings).
type Cache struct {
	client *goredis.Client
	prefix string
}

// NewCache returns a cache whose keys start with prefix.
func NewCache(client *goredis.Client, prefix string) *Cache {
	return &Cache{client: client, prefix: prefix}
}

func (c *Cache) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Second)
}

// Get returns the value, or nil when missing or when Redis is unreachable
// (the library then fetches a fresh token).
func (c *Cache) Get(key string) any {
	ctx, cancel := c.ctx()
	defer cancel()
	v, err := c.client.Get(ctx, c.prefix+key).Result()
	if err != nil {
		return nil
	}
	return v
}

// Set stores a value with a timeout.
func (c *Cache) Set(key string, val any, timeout time.Duration) error {
	ctx, cancel := c.ctx()
	defer cancel()
	return c.client.Set(ctx, c.prefix+key, val, timeout).Err()
}

// IsExist reports whether key is cached.
func (c *Cache) IsExist(key string) bool {
	ctx, cancel := c.ctx()
	defer cancel()
	n, err := c.client.Exists(ctx, c.prefix+key).Result()
	return err == nil && n > 0
}

// Delete drops a key.
func (c *Cache) Delete(key string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	return c.client.Del(ctx, c.prefix+key).Err()
}
