package proxy

import "sync"

// bufferPool reuses the 32 KiB buffers that the ReverseProxy copies
// response bodies through, instead of allocating one per request. The
// ReverseProxy's BufferPool hands slices, not pointers, and a slice put
// in a sync.Pool is boxed on the heap each time; so the buffers are kept
// in holders (*[]byte) that are themselves pooled, and neither Get nor
// Put allocates once both pools are warm.
type bufferPool struct{ bufs, holders sync.Pool }

func newBufferPool() *bufferPool { return new(bufferPool) }

func (b *bufferPool) Get() []byte {
	h, ok := b.bufs.Get().(*[]byte)
	if !ok {
		return make([]byte, 32<<10)
	}
	buf := *h
	*h = nil
	b.holders.Put(h)
	return buf
}

func (b *bufferPool) Put(buf []byte) {
	h, ok := b.holders.Get().(*[]byte)
	if !ok {
		h = new([]byte)
	}
	*h = buf
	b.bufs.Put(h)
}
