package telemetry

import (
	"fmt"
	"strconv"
	"strings"
)

// identity is a resolved distributed identity (spec/stormlog.md,
// "Distributed identity").
type identity struct {
	jobID     string // "" = null
	rank      int64
	localRank int64
	worldSize int64
}

// rankEnvGroups are tried in order; the first whose rank and size variables
// are both present (non-blank) wins.
var rankEnvGroups = [][3]string{ // rank, local rank, size
	{"RANK", "LOCAL_RANK", "WORLD_SIZE"},
	{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"},
	{"SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"},
}

// jobIDEnv: the job id is the first non-blank of these.
var jobIDEnv = []string{"TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"}

// resolveIdentity resolves job_id, rank, local_rank and world_size: the
// explicit field of m, then meta's key, then the environment (getenv; nil
// means none), then the defaults (null, rank 0, local_rank = rank,
// world_size 1). It returns every problem, each naming the field, metadata
// key or variable it came from, including the combination rules
// (rank < world_size, local_rank < world_size, both 0 when world_size is 1).
func resolveIdentity(m, meta map[string]any, getenv func(string) string) (identity, []string) {
	var probs []string
	id := identity{}

	// job_id: an explicit null falls through to metadata, as a missing one.
	jobSet := false
	for _, src := range []struct {
		name string
		v    any
		ok   bool
	}{
		{fieldJobID, m[fieldJobID], m[fieldJobID] != nil},
		{"metadata.job_id", meta[fieldJobID], meta[fieldJobID] != nil},
	} {
		if !src.ok {
			continue
		}
		s, isStr := src.v.(string)
		if !isStr || strings.TrimSpace(s) == "" {
			probs = append(probs, fmt.Sprintf("%s: must be null or a non-empty string, got %s", src.name, literal(src.v)))
		}
		id.jobID, jobSet = s, true
		break
	}
	if !jobSet && getenv != nil {
		for _, k := range jobIDEnv {
			if v := strings.TrimSpace(getenv(k)); v != "" {
				id.jobID = v
				break
			}
		}
	}

	// The environment group is chosen once, for the keys that need it.
	var env *envIdentity
	envLookup := func() *envIdentity {
		if env == nil {
			env = lookupEnvIdentity(getenv)
			probs = append(probs, env.probs...)
		}
		return env
	}

	resolveInt := func(f string) (v int64, found bool) {
		if raw, ok := m[f]; ok {
			// An explicit rank, local_rank or world_size is an integer, never
			// null (the writer's defaults are 0, 0, 1).
			n, prob := intValue(raw)
			if prob != "" {
				probs = append(probs, fmt.Sprintf("%s: must be an integer, %s", f, prob))
			}
			return n, true
		}
		if raw, ok := meta[f]; ok && raw != nil {
			n, prob := intValue(raw)
			if prob != "" {
				probs = append(probs, fmt.Sprintf("metadata.%s: must be an integer, %s", f, prob))
			}
			return n, true
		}
		if e := envLookup(); e.found {
			switch f {
			case fieldRank:
				return e.rank, true
			case fieldLocalRank:
				return e.localRank, true
			case fieldWorldSize:
				return e.worldSize, true
			}
		}
		return 0, false
	}

	rank, _ := resolveInt(fieldRank)
	localRank, okLocal := resolveInt(fieldLocalRank)
	worldSize, okSize := resolveInt(fieldWorldSize)
	if !okLocal {
		localRank = rank
	}
	if !okSize {
		worldSize = 1
	}
	id.rank, id.localRank, id.worldSize = rank, localRank, worldSize
	if len(probs) > 0 {
		return id, probs // combinations of ill-typed values say nothing more
	}

	if rank < 0 {
		probs = append(probs, fmt.Sprintf("rank: must be >= 0, got %d", rank))
	}
	// A local rank that defaulted to the rank adds nothing to the rank's
	// problems, so only a resolved one is checked.
	if okLocal && localRank < 0 {
		probs = append(probs, fmt.Sprintf("local_rank: must be >= 0, got %d", localRank))
	}
	if worldSize < 1 {
		probs = append(probs, fmt.Sprintf("world_size: must be >= 1, got %d", worldSize))
	}
	if len(probs) > 0 {
		return id, probs
	}
	if worldSize == 1 {
		if rank != 0 {
			probs = append(probs, fmt.Sprintf("rank: must be 0 when world_size is 1, got %d", rank))
		}
		if okLocal && localRank != 0 {
			probs = append(probs, fmt.Sprintf("local_rank: must be 0 when world_size is 1, got %d", localRank))
		}
		return id, probs
	}
	if rank >= worldSize {
		probs = append(probs, fmt.Sprintf("rank: %d must be < world_size %d", rank, worldSize))
	}
	if okLocal && localRank >= worldSize {
		probs = append(probs, fmt.Sprintf("local_rank: %d must be < world_size %d", localRank, worldSize))
	}
	return id, probs
}

// envIdentity is the rank group found in the environment.
type envIdentity struct {
	found                      bool
	rank, localRank, worldSize int64
	probs                      []string
}

// lookupEnvIdentity finds the first group whose rank and size variables are
// both present; a missing or blank local rank takes the rank. Values are
// trimmed before parsing.
func lookupEnvIdentity(getenv func(string) string) *envIdentity {
	e := &envIdentity{}
	if getenv == nil {
		return e
	}
	for _, g := range rankEnvGroups {
		rankS, sizeS := strings.TrimSpace(getenv(g[0])), strings.TrimSpace(getenv(g[2]))
		if rankS == "" || sizeS == "" {
			continue
		}
		e.found = true
		e.rank = parseEnvInt(g[0], rankS, &e.probs)
		e.localRank = e.rank
		if localS := strings.TrimSpace(getenv(g[1])); localS != "" {
			e.localRank = parseEnvInt(g[1], localS, &e.probs)
		}
		e.worldSize = parseEnvInt(g[2], sizeS, &e.probs)
		return e
	}
	return e
}

func parseEnvInt(name, s string, probs *[]string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		*probs = append(*probs, fmt.Sprintf("environment %s: must be an integer, got %q", name, s))
	}
	return n
}
