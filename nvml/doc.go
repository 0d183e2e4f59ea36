// Package nvml is edgerelay's own small view of the GPUs: an inventory
// (Device), one reading per device per tick (Sample), the processes using a
// device (Process), slow health counters (ECC) and Xid error events
// (XidEvent). Nothing outside this package sees go-nvml's types.
//
// Two sources stand behind the one Backend type:
//
//   - the go-nvml adapter (EDGERELAY_NVML=auto|on), which loads
//     libnvidia-ml.so.1 with dlopen;
//   - a simulated DGX server (EDGERELAY_NVML=sim) built on go-nvml's mock
//     servers (dgxh100, dgxa100), with fixed UUIDs and PCI bus ids,
//     scripted time-varying readings, and fault hooks for tests (Sim).
//
// Both need cgo and live in files built with "linux && cgo". In any other
// build Open reports NVML as unavailable and the rest of the program still
// compiles and runs without GPUs.
//
// # Calls that kill the process
//
// Some NVML mistakes abort the process, and no recover() can catch them
// (spec/nvml.md): any call after a failed Init, and any call of a symbol the
// installed driver lacks. So:
//
//   - Open checks that the library file loads and exports nvmlInit before
//     it calls Init, and after a failed Init calls nothing else, ever: the
//     failure is remembered for the life of the process and returned by
//     every later Open. go-nvml's library is a process-wide singleton, so
//     Init happens once per process and Shutdown once, when the last
//     Backend closes.
//   - Every NVML function this package uses, old or new, is looked up with
//     LookupSymbol once after Init; a missing symbol makes its field
//     unsupported instead of being called (GetMemoryInfo_v2 falls back to
//     GetMemoryInfo).
//   - Return codes are never formatted through go-nvml's Error method,
//     which calls nvmlErrorString in the library; codes are named here.
//
// # Errors from the driver
//
// ERROR_NOT_SUPPORTED (and a missing symbol) means "omit that field": the
// field's bit is absent from Sample.Fields, never a zero, and the device is
// not asked again until it is inventoried again. ERROR_GPU_IS_LOST and its
// friends (GPU_NOT_FOUND, RESET_REQUIRED, LIB_RM_VERSION_MISMATCH) mark the
// device lost: calls return an error matching ErrLost, and the device is
// inventoried again with exponential backoff (Options.LostRetryMin up to
// LostRetryMax) until a whole reading succeeds. Other errors omit the field
// for that tick and are logged, throttled.
//
// # Attribution
//
// Attributor maps a host pid to its container (from /proc/<pid>/cgroup) and
// to the Livepeer PIPELINE and MODEL_ID of the process (from
// /proc/<pid>/environ). It needs no cgo.
package nvml
