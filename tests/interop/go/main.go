// Command twinlog-interop checks proofs and a checkpoint written by twinlog's
// audit log against the Go reference implementations:
// github.com/transparency-dev/merkle (RFC 6962 / RFC 9162 proofs) and
// golang.org/x/mod/sumdb/note (C2SP signed notes).
//
// Usage: go run . FILE.json
//
// It exits 0 when every proof and the checkpoint verify, and non-zero on the
// first failure. The Rust test services/auditlog/tests/it/interop.rs drives it.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

type inclusionProof struct {
	LeafIndex     uint64   `json:"leaf_index"`
	TreeSize      uint64   `json:"tree_size"`
	LeafHash      string   `json:"leaf_hash"`
	RootHash      string   `json:"root_hash"`
	InclusionPath []string `json:"inclusion_path"`
}

type consistencyProof struct {
	FirstSize       uint64   `json:"first_size"`
	SecondSize      uint64   `json:"second_size"`
	FirstRoot       string   `json:"first_root"`
	SecondRoot      string   `json:"second_root"`
	ConsistencyPath []string `json:"consistency_path"`
}

type input struct {
	VerifierKey string             `json:"verifier_key"`
	Checkpoint  string             `json:"checkpoint"`
	Inclusion   []inclusionProof   `json:"inclusion"`
	Consistency []consistencyProof `json:"consistency"`
}

func decodeHash(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("hash %q has %d bytes, want 32", s, len(b))
	}
	return b, nil
}

func decodePath(path []string) ([][]byte, error) {
	out := make([][]byte, 0, len(path))
	for _, s := range path {
		h, err := decodeHash(s)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func run(file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		return fmt.Errorf("parse %s: %w", file, err)
	}

	// The checkpoint: a signed note whose text is a C2SP tlog-checkpoint.
	verifier, err := note.NewVerifier(in.VerifierKey)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open([]byte(in.Checkpoint), note.VerifierList(verifier))
	if err != nil {
		return fmt.Errorf("checkpoint note: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != verifier.Name() {
		return fmt.Errorf("checkpoint text is not a tlog-checkpoint for %s: %q", verifier.Name(), n.Text)
	}
	cpSize, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return fmt.Errorf("checkpoint size: %w", err)
	}
	cpRoot, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(cpRoot) != 32 {
		return fmt.Errorf("checkpoint root %q is not a base64 SHA-256 hash", lines[2])
	}
	matched := 0

	for i, p := range in.Inclusion {
		leaf, err := decodeHash(p.LeafHash)
		if err != nil {
			return fmt.Errorf("inclusion %d: %w", i, err)
		}
		root, err := decodeHash(p.RootHash)
		if err != nil {
			return fmt.Errorf("inclusion %d: %w", i, err)
		}
		path, err := decodePath(p.InclusionPath)
		if err != nil {
			return fmt.Errorf("inclusion %d: %w", i, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.LeafIndex, p.TreeSize, leaf, path, root); err != nil {
			return fmt.Errorf("inclusion %d (leaf %d, size %d): %w", i, p.LeafIndex, p.TreeSize, err)
		}
		if p.TreeSize == cpSize {
			if !bytes.Equal(root, cpRoot) {
				return fmt.Errorf("inclusion %d: root differs from the checkpoint at size %d", i, cpSize)
			}
			matched++
		}
	}

	for i, p := range in.Consistency {
		r1, err := decodeHash(p.FirstRoot)
		if err != nil {
			return fmt.Errorf("consistency %d: %w", i, err)
		}
		r2, err := decodeHash(p.SecondRoot)
		if err != nil {
			return fmt.Errorf("consistency %d: %w", i, err)
		}
		path, err := decodePath(p.ConsistencyPath)
		if err != nil {
			return fmt.Errorf("consistency %d: %w", i, err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, p.FirstSize, p.SecondSize, path, r1, r2); err != nil {
			return fmt.Errorf("consistency %d (%d -> %d): %w", i, p.FirstSize, p.SecondSize, err)
		}
	}

	fmt.Printf("ok: checkpoint %s size %d, %d inclusion proofs (%d against the checkpoint), %d consistency proofs\n",
		verifier.Name(), cpSize, len(in.Inclusion), matched, len(in.Consistency))
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: twinlog-interop FILE.json")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
}
