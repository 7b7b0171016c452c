package trainer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/styx-inference/styx/pkg/model"
)

const checkpointVersion = 1

// checkpoint is the trees grown so far, tied to the data and parameters
// they were grown on.
type checkpoint struct {
	Version     int              `json:"version"`
	Fingerprint string           `json:"fingerprint"`
	Params      model.Params     `json:"params"`
	Heads       []checkpointHead `json:"heads"`
}

type checkpointHead struct {
	Name  string       `json:"name"`
	Trees []model.Tree `json:"trees"`
}

func (c *checkpoint) set(head int, name string, bs *model.Booster) {
	for len(c.Heads) <= head {
		c.Heads = append(c.Heads, checkpointHead{})
	}
	c.Heads[head] = checkpointHead{Name: name, Trees: bs.Trees()}
}

func (c *checkpoint) trees() int {
	n := 0
	for _, h := range c.Heads {
		n += len(h.Trees)
	}
	return n
}

func (c *checkpoint) matches(fp string, p model.Params) error {
	if c.Version != checkpointVersion {
		return fmt.Errorf("checkpoint version %d, want %d", c.Version, checkpointVersion)
	}
	if c.Params != p {
		return errors.New("checkpoint was made with other hyper-parameters")
	}
	if c.Fingerprint != fp {
		return errors.New("checkpoint was made on other training data (database, labels, split, sampling or seed)")
	}
	for i, h := range c.Heads {
		if i >= len(heads) || h.Name != heads[i] {
			return fmt.Errorf("checkpoint head %d is %q", i, h.Name)
		}
		if len(h.Trees) > p.Trees {
			return fmt.Errorf("checkpoint head %s has %d trees, more than %d", h.Name, len(h.Trees), p.Trees)
		}
	}
	return nil
}

func (c *checkpoint) write(path string) error {
	return model.WriteFileAtomic(path, func(w io.Writer) error {
		return json.NewEncoder(w).Encode(c)
	})
}

func readCheckpoint(path string) (*checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &checkpoint{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("read checkpoint %s: %w (use --restart to discard it)", path, err)
	}
	return c, nil
}
