package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame layout (docs/PROTOCOL.md): version u8 | type u8 | body length u32
// big-endian | body. Each type has its own body limit.
const (
	// Version is the only frame version this build speaks.
	Version = 1
	// HeaderSize is the frame header size.
	HeaderSize = 6
	// MaxBody is the largest body of any message type.
	MaxBody = 8 << 20
	// MaxControlBody bounds every message not listed in bodyLimits.
	MaxControlBody = 16 << 10
)

// Decoding errors; all wrap ErrMalformed.
var (
	ErrMalformed   = errors.New("malformed message")
	ErrVersion     = fmt.Errorf("%w: unsupported version", ErrMalformed)
	ErrUnknownType = fmt.Errorf("%w: unknown type", ErrMalformed)
	ErrTooLarge    = fmt.Errorf("%w: too large", ErrMalformed)
	ErrTruncated   = fmt.Errorf("%w: truncated", ErrMalformed)
)

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) i64(v int64)  { e.u64(uint64(v)) }
func (e *encoder) fixed(b []byte) {
	e.b = append(e.b, b...)
}
func (e *encoder) bytes(b []byte) { e.u32(uint32(len(b))); e.b = append(e.b, b...) }
func (e *encoder) str(s string)   { e.u16(uint16(len(s))); e.b = append(e.b, s...) }
func (e *encoder) boolean(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

// decoder reads a body; the first error sticks and later reads return zero.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: need %d bytes, have %d", ErrTruncated, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}
func (d *decoder) u16() uint16 {
	if b := d.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}
func (d *decoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}
func (d *decoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}
func (d *decoder) i64() int64 { return int64(d.u64()) }
func (d *decoder) fixed(dst []byte) {
	if b := d.take(len(dst)); b != nil {
		copy(dst, b)
	}
}
func (d *decoder) bytes(max int) []byte {
	n := d.u32()
	if d.err == nil && int64(n) > int64(max) {
		d.fail("field of %d bytes exceeds %d", n, max)
		return nil
	}
	b := d.take(int(n))
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}
func (d *decoder) str(max int) string {
	n := d.u16()
	if d.err == nil && int(n) > max {
		d.fail("string of %d bytes exceeds %d", n, max)
		return ""
	}
	return string(d.take(int(n)))
}
func (d *decoder) boolean() bool {
	v := d.u8()
	if v > 1 {
		d.fail("bool %d", v)
	}
	return v == 1
}

// count reads a u32 element count, checks it against max and against the
// bytes left (each element takes at least minSize bytes), so that a forged
// count cannot make the decoder allocate.
func (d *decoder) count(max, minSize int) int {
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if int64(n) > int64(max) {
		d.fail("%d elements exceed %d", n, max)
		return 0
	}
	if int64(n)*int64(minSize) > int64(len(d.b)) {
		d.err = fmt.Errorf("%w: %d elements need at least %d bytes, have %d", ErrTruncated, n, int64(n)*int64(minSize), len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// Message is one protocol message.
type Message interface {
	Type() MsgType
	encode(e *encoder)
	decode(d *decoder)
}

// EncodeFrame returns the framed message.
func EncodeFrame(m Message) ([]byte, error) {
	e := &encoder{b: make([]byte, HeaderSize, 64)}
	m.encode(e)
	body := len(e.b) - HeaderSize
	if body > bodyLimit(m.Type()) {
		return nil, fmt.Errorf("%s: %w: body of %d bytes exceeds %d", m.Type(), ErrTooLarge, body, bodyLimit(m.Type()))
	}
	e.b[0] = Version
	e.b[1] = byte(m.Type())
	binary.BigEndian.PutUint32(e.b[2:], uint32(body))
	return e.b, nil
}

// parseHeader checks a frame header and returns the type and body length.
func parseHeader(h []byte) (MsgType, int, error) {
	if h[0] != Version {
		return 0, 0, fmt.Errorf("%w %d (this build speaks %d)", ErrVersion, h[0], Version)
	}
	t := MsgType(h[1])
	if newMessage(t) == nil {
		return 0, 0, fmt.Errorf("%w 0x%02x", ErrUnknownType, h[1])
	}
	n := binary.BigEndian.Uint32(h[2:])
	if int64(n) > int64(bodyLimit(t)) {
		return 0, 0, fmt.Errorf("%s: %w: body of %d bytes exceeds %d", t, ErrTooLarge, n, bodyLimit(t))
	}
	return t, int(n), nil
}

func decodeBody(t MsgType, body []byte) (Message, error) {
	m := newMessage(t)
	d := &decoder{b: body}
	m.decode(d)
	if err := d.done(); err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	return m, nil
}

// DecodeFrame decodes exactly one whole frame.
func DecodeFrame(b []byte) (Message, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrTruncated, len(b))
	}
	t, n, err := parseHeader(b[:HeaderSize])
	if err != nil {
		return nil, err
	}
	if len(b)-HeaderSize != n {
		if len(b)-HeaderSize < n {
			return nil, fmt.Errorf("%s: %w: body %d bytes, header says %d", t, ErrTruncated, len(b)-HeaderSize, n)
		}
		return nil, fmt.Errorf("%s: %w: %d bytes after the body", t, ErrMalformed, len(b)-HeaderSize-n)
	}
	return decodeBody(t, b[HeaderSize:])
}

// WriteMessage writes one frame.
func WriteMessage(w io.Writer, m Message) error {
	b, err := EncodeFrame(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadMessage reads one frame of a storage-protocol type, refusing bodies
// above the type's limit before reading them. Callers that know what may
// come next use ReadMessageOf instead.
func ReadMessage(r io.Reader) (Message, error) {
	return ReadMessageOf(r, func(t MsgType) bool { return newMessage(t) != nil })
}

// ErrUnexpectedType means a frame of a known type arrived where another was
// expected (a reply where a request belongs, or the wrong reply).
var ErrUnexpectedType = fmt.Errorf("%w: unexpected type", ErrMalformed)

// initialBodyBuffer is the first allocation for a body; the buffer then
// doubles as bytes arrive, so that a header alone never costs more than
// this, and a body costs at most twice the bytes actually received.
const initialBodyBuffer = 4 << 10

// ReadMessageOf reads one frame of any type (mediator types included) that
// accept allows. The type is checked before the body is read, the body
// length against that type's own limit, and the body is read into a buffer
// that grows as bytes arrive: a peer that announces a large body and sends
// nothing makes this side allocate next to nothing.
func ReadMessageOf(r io.Reader, accept func(MsgType) bool) (Message, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: header", ErrTruncated)
		}
		return nil, err
	}
	if h[0] != Version {
		return nil, fmt.Errorf("%w %d (this build speaks %d)", ErrVersion, h[0], Version)
	}
	t := MsgType(h[1])
	if !knownType(t) {
		return nil, fmt.Errorf("%w 0x%02x", ErrUnknownType, h[1])
	}
	if !accept(t) {
		if IsRequest(t) { // a request this side does not serve
			return nil, fmt.Errorf("%w %s here: %w", ErrUnexpectedType, TypeName(t), ErrUnsupported)
		}
		return nil, fmt.Errorf("%w %s here", ErrUnexpectedType, TypeName(t))
	}
	n := int64(binary.BigEndian.Uint32(h[2:]))
	if limit := int64(BodyLimit(t)); n > limit {
		return nil, fmt.Errorf("%s: %w: body of %d bytes exceeds %d", TypeName(t), ErrTooLarge, n, limit)
	}
	body, err := readBody(r, int(n))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w: body", TypeName(t), ErrTruncated)
		}
		return nil, err
	}
	if newMessage(t) != nil {
		return decodeBody(t, body)
	}
	return decodeMediatorBody(t, body)
}

// readBody reads exactly n bytes into a buffer that starts small and
// doubles as bytes arrive.
func readBody(r io.Reader, n int) ([]byte, error) {
	body := make([]byte, min(n, initialBodyBuffer))
	got := 0
	for {
		m, err := io.ReadFull(r, body[got:])
		got += m
		if err != nil {
			return nil, err
		}
		if got == n {
			return body, nil
		}
		grown := make([]byte, min(n, 2*len(body)))
		copy(grown, body)
		body = grown
	}
}

// knownType reports whether t is any message type of this build.
func knownType(t MsgType) bool { return newMessage(t) != nil || newMediatorMessage(t) != nil }

// BodyLimit is the largest body a message of type t may have.
func BodyLimit(t MsgType) int {
	if newMediatorMessage(t) != nil {
		return MaxMediatorBody
	}
	return bodyLimit(t)
}

// IsRequest reports whether t is a request: requests have even type
// numbers, their replies the next (odd) one, ErrorReply included.
func IsRequest(t MsgType) bool { return knownType(t) && t&1 == 0 }

// ReplyType is the reply type that answers a request of type t.
func ReplyType(t MsgType) MsgType { return t + 1 }

// OneOf accepts exactly the types listed.
func OneOf(types ...MsgType) func(MsgType) bool {
	return func(t MsgType) bool {
		for _, u := range types {
			if t == u {
				return true
			}
		}
		return false
	}
}
