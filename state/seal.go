package state

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// sealer encrypts what must be kept only until it is handled (chat input
// recorded before its ack), so neither the state file, its freed pages,
// nor a backup holds what people typed in clear.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) == 0 {
		// No key given (tools and tests that open a store directly): a key
		// for this process only. Input sealed with it cannot be opened
		// after a restart, so the bot always passes one.
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	k := sha256.Sum256(key)
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(plain, ad []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	_, _ = rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plain, ad)
}

// errUnsealable means sealed data was made with another key.
var errUnsealable = errors.New("sealed with another key (was the state key changed?)")

func (s *sealer) open(sealed, ad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, errUnsealable
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, errUnsealable
	}
	return plain, nil
}

// LoadKey returns the key that seals recorded chat input: the value of
// the environment variable envName when it is set, otherwise the key kept
// in keyFile, created (32 random bytes, hex, mode 0600, never over an
// existing file or through a symlink) the first time. The key file is not
// part of a backup: keep it apart from them.
func LoadKey(envName, keyFile string) ([]byte, error) {
	if v := strings.TrimSpace(os.Getenv(envName)); envName != "" && v != "" {
		if len(v) < 16 {
			return nil, fmt.Errorf("%s is set but shorter than 16 characters; use e.g. `openssl rand -hex 32`", envName)
		}
		return []byte(v), nil
	}
	if data, err := os.ReadFile(keyFile); err == nil {
		k := strings.TrimSpace(string(data))
		if len(k) < 32 {
			return nil, fmt.Errorf("state key file %s is damaged (shorter than 32 characters)", keyFile)
		}
		return []byte(k), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read state key file: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	f, err := createExclusive(keyFile)
	if err != nil {
		return nil, fmt.Errorf("create state key file: %w", err)
	}
	k := hex.EncodeToString(raw[:])
	_, err = f.WriteString(k + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write state key file: %w", err)
	}
	return []byte(k), nil
}
