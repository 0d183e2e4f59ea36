//go:build linux && cgo

package nvml

// sym names one NVML function this package may call. Each is looked up once
// after a successful Init (spec/nvml.md: calling a function the installed
// driver lacks kills the process).
type sym int

const (
	symCount sym = iota
	symHandleByIndex
	symUUID
	symName
	symPCI
	symIndex
	symMemV1
	symMemV2
	symUtil
	symPower
	symTemp
	symClock
	symProcs
	symProcName
	symECC
	symRemapped
	symEventSetCreate
	symRegisterEvents
	symSupportedEvents
	symEventSetWait
	symEventSetFree
	symDriverVersion
	symNVMLVersion
	symShutdown
	numSyms
)

// symNames lists, per function, the library symbols go-nvml may bind it to;
// the function is present when any of them is (go-nvml picks the newest
// version the library exports, see its updateVersionedSymbols).
var symNames = [numSyms][]string{
	symCount:           {"nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"},
	symHandleByIndex:   {"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"},
	symUUID:            {"nvmlDeviceGetUUID"},
	symName:            {"nvmlDeviceGetName"},
	symPCI:             {"nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo"},
	symIndex:           {"nvmlDeviceGetIndex"},
	symMemV1:           {"nvmlDeviceGetMemoryInfo"},
	symMemV2:           {"nvmlDeviceGetMemoryInfo_v2"},
	symUtil:            {"nvmlDeviceGetUtilizationRates"},
	symPower:           {"nvmlDeviceGetPowerUsage"},
	symTemp:            {"nvmlDeviceGetTemperature"},
	symClock:           {"nvmlDeviceGetClockInfo"},
	symProcs:           {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2", "nvmlDeviceGetComputeRunningProcesses"},
	symProcName:        {"nvmlSystemGetProcessName"},
	symECC:             {"nvmlDeviceGetTotalEccErrors"},
	symRemapped:        {"nvmlDeviceGetRemappedRows"},
	symEventSetCreate:  {"nvmlEventSetCreate"},
	symRegisterEvents:  {"nvmlDeviceRegisterEvents"},
	symSupportedEvents: {"nvmlDeviceGetSupportedEventTypes"},
	symEventSetWait:    {"nvmlEventSetWait_v2", "nvmlEventSetWait"},
	symEventSetFree:    {"nvmlEventSetFree"},
	symDriverVersion:   {"nvmlSystemGetDriverVersion"},
	symNVMLVersion:     {"nvmlSystemGetNVMLVersion"},
	symShutdown:        {"nvmlShutdown"},
}

// symSet records which functions the loaded library has. It is written once
// at open and read-only afterwards.
type symSet [numSyms]bool

// has reports whether every listed function is present.
func (s *symSet) has(list ...sym) bool {
	for _, x := range list {
		if !s[x] {
			return false
		}
	}
	return true
}

// lookupSymbols asks the library about every function. lookup must be
// LookupSymbol of an initialised library.
func lookupSymbols(lookup func(string) error) (symSet, map[string]bool) {
	var set symSet
	seen := make(map[string]bool)
	for i, names := range symNames {
		for _, n := range names {
			ok := lookup(n) == nil
			seen[n] = ok
			if ok {
				set[i] = true
			}
		}
	}
	return set, seen
}

// missingFields are the per-tick readings whose function the library lacks:
// they are treated as unsupported on every device without a call.
func (s *symSet) missingFields() Field {
	var f Field
	if !s[symMemV1] && !s[symMemV2] {
		f |= FieldMemory
	}
	if !s[symMemV2] {
		f |= FieldMemReserved
	}
	if !s[symUtil] {
		f |= FieldUtilization
	}
	if !s[symTemp] {
		f |= FieldTemperature
	}
	if !s[symPower] {
		f |= FieldPower
	}
	if !s[symClock] {
		f |= FieldSMClock
	}
	if !s[symECC] {
		f |= FieldECCVolatileUncorrected | FieldECCVolatileCorrected | FieldECCAggregateUncorrected
	}
	if !s[symRemapped] {
		f |= FieldRemappedRows
	}
	return f
}
