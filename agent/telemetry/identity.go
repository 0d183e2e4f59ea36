package telemetry

import (
	"fmt"
	"strconv"
	"strings"
)

// identity is a resolved distributed identity (spec/stormlog.md,
// "Distributed identity").
type identity struct {
	jobID                      string // "" = null
	rank, localRank, worldSize pyInt
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

// resolveIdentity resolves job_id, rank, local_rank and world_size as
// stormlog does: the explicit field of m unless it is null, then meta's key
// unless null (meta is nil except for legacy records: stormlog reads
// metadata for those only), then the environment (getenv; nil means none,
// as in stormlog's loader), then the defaults (null, rank 0, local_rank =
// rank, world_size 1). It returns every problem, each naming the field,
// metadata key or variable it came from, including the combination rules
// (rank < world_size, local_rank < world_size, both 0 when world_size is 1).
func resolveIdentity(m, meta map[string]any, getenv func(string) string) (identity, []string) {
	var probs []string
	id := identity{}

	type source struct {
		name string // field or "metadata.<key>"
		v    any
	}
	pick := func(f string) (source, bool) {
		if v := m[f]; v != nil {
			return source{f, v}, true
		}
		if v := meta[f]; v != nil {
			return source{"metadata." + f, v}, true
		}
		return source{}, false
	}

	if src, ok := pick(fieldJobID); ok {
		if nonEmptyStringProblem(src.v) != "" {
			probs = append(probs, src.name+": must be null or a non-empty string, got "+literal(src.v))
		} else {
			id.jobID = src.v.(string)
		}
	} else if getenv != nil {
		for _, k := range jobIDEnv {
			if v := strings.TrimSpace(getenv(k)); v != "" {
				id.jobID = v
				break
			}
		}
	}

	var env *envIdentity // looked up once, for the keys that need it
	resolveInt := func(f string) (v pyInt, found bool) {
		if src, ok := pick(f); ok {
			n, prob := pyIntValue(src.v)
			if prob != "" {
				probs = append(probs, fmt.Sprintf("%s: must be an integer, %s", src.name, prob))
			}
			return n, true
		}
		if getenv == nil {
			return v, false
		}
		if env == nil {
			env = lookupEnvIdentity(getenv)
			probs = append(probs, env.probs...)
		}
		if !env.found {
			return v, false
		}
		switch f {
		case fieldRank:
			return int64Py(env.rank), true
		case fieldLocalRank:
			return int64Py(env.localRank), true
		default:
			return int64Py(env.worldSize), true
		}
	}

	rank, _ := resolveInt(fieldRank)
	localRank, okLocal := resolveInt(fieldLocalRank)
	worldSize, okSize := resolveInt(fieldWorldSize)
	if !okLocal {
		localRank = rank
	}
	if !okSize {
		worldSize = int64Py(1)
	}
	id.rank, id.localRank, id.worldSize = rank, localRank, worldSize
	if len(probs) > 0 {
		return id, probs // combinations of ill-typed values say nothing more
	}

	if rank.cmp64(0) < 0 {
		probs = append(probs, fmt.Sprintf("rank: must be >= 0, got %s", rank))
	}
	// A local rank that defaulted to the rank adds nothing to the rank's
	// problems, so only a resolved one is checked.
	if okLocal && localRank.cmp64(0) < 0 {
		probs = append(probs, fmt.Sprintf("local_rank: must be >= 0, got %s", localRank))
	}
	if worldSize.cmp64(1) < 0 {
		probs = append(probs, fmt.Sprintf("world_size: must be >= 1, got %s", worldSize))
	}
	if len(probs) > 0 {
		return id, probs
	}
	if worldSize.cmp64(1) == 0 {
		if rank.cmp64(0) != 0 {
			probs = append(probs, fmt.Sprintf("rank: must be 0 when world_size is 1, got %s", rank))
		}
		if okLocal && localRank.cmp64(0) != 0 {
			probs = append(probs, fmt.Sprintf("local_rank: must be 0 when world_size is 1, got %s", localRank))
		}
		return id, probs
	}
	if rank.cmp(worldSize) >= 0 {
		probs = append(probs, fmt.Sprintf("rank: %s must be < world_size %s", rank, worldSize))
	}
	if okLocal && localRank.cmp(worldSize) >= 0 {
		probs = append(probs, fmt.Sprintf("local_rank: %s must be < world_size %s", localRank, worldSize))
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
