package nvml

import "strconv"

// NVML return codes this package reacts to. They are go-nvml's Return values
// as plain ints: names are kept here because go-nvml's Return.Error calls
// nvmlErrorString inside the library, which must not be called after a
// failed Init (spec/nvml.md).
const (
	codeSuccess              = 0
	codeNotSupported         = 3
	codeNoPermission         = 4
	codeDriverNotLoaded      = 9
	codeTimeout              = 10
	codeLibraryNotFound      = 12
	codeFunctionNotFound     = 13
	codeGPUIsLost            = 15
	codeResetRequired        = 16
	codeLibRMVersionMismatch = 18
	codeArgVersionMismatch   = 25
	codeGPUNotFound          = 28
	codeUnknown              = 999
)

var codeNames = map[int]string{
	0:   "NVML_SUCCESS",
	1:   "NVML_ERROR_UNINITIALIZED",
	2:   "NVML_ERROR_INVALID_ARGUMENT",
	3:   "NVML_ERROR_NOT_SUPPORTED",
	4:   "NVML_ERROR_NO_PERMISSION",
	5:   "NVML_ERROR_ALREADY_INITIALIZED",
	6:   "NVML_ERROR_NOT_FOUND",
	7:   "NVML_ERROR_INSUFFICIENT_SIZE",
	8:   "NVML_ERROR_INSUFFICIENT_POWER",
	9:   "NVML_ERROR_DRIVER_NOT_LOADED",
	10:  "NVML_ERROR_TIMEOUT",
	11:  "NVML_ERROR_IRQ_ISSUE",
	12:  "NVML_ERROR_LIBRARY_NOT_FOUND",
	13:  "NVML_ERROR_FUNCTION_NOT_FOUND",
	14:  "NVML_ERROR_CORRUPTED_INFOROM",
	15:  "NVML_ERROR_GPU_IS_LOST",
	16:  "NVML_ERROR_RESET_REQUIRED",
	17:  "NVML_ERROR_OPERATING_SYSTEM",
	18:  "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
	19:  "NVML_ERROR_IN_USE",
	20:  "NVML_ERROR_MEMORY",
	21:  "NVML_ERROR_NO_DATA",
	22:  "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
	23:  "NVML_ERROR_INSUFFICIENT_RESOURCES",
	24:  "NVML_ERROR_FREQ_NOT_SUPPORTED",
	25:  "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
	26:  "NVML_ERROR_DEPRECATED",
	27:  "NVML_ERROR_NOT_READY",
	28:  "NVML_ERROR_GPU_NOT_FOUND",
	29:  "NVML_ERROR_INVALID_STATE",
	30:  "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED",
	999: "NVML_ERROR_UNKNOWN",
}

// codeName names an NVML return code without calling into the library.
func codeName(c int) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return "NVML_ERROR_" + strconv.Itoa(c)
}

// isLostCode reports the codes after which a device cannot answer until it
// is reset or comes back: the device is marked lost and inventoried again.
func isLostCode(c int) bool {
	switch c {
	case codeGPUIsLost, codeGPUNotFound, codeResetRequired, codeLibRMVersionMismatch:
		return true
	}
	return false
}

// isUnsupportedCode reports the codes that mean "this device or driver has
// no such reading": the field is omitted and not asked for again.
func isUnsupportedCode(c int) bool {
	return c == codeNotSupported || c == codeFunctionNotFound
}

// initReason is the one-line reason for a failed nvmlInit.
func initReason(c int) string {
	var what string
	switch c {
	case codeLibraryNotFound:
		what = "library not found"
	case codeDriverNotLoaded:
		what = "driver not loaded"
	case codeNoPermission:
		what = "no permission to open the GPU devices"
	case codeLibRMVersionMismatch:
		what = "NVML library and kernel driver versions differ (driver upgraded without reboot?)"
	case codeGPUIsLost:
		what = "a GPU is lost"
	default:
		what = "init failed"
	}
	return what + " (" + codeName(c) + ")"
}
