/*
 * A fake libnvidia-ml.so.1 for testing the go-nvml adapter without a GPU.
 * The test compiles it with gcc into a temporary directory:
 *
 *   gcc -shared -fPIC -o libnvidia-ml.so.1 fakenvml.c [-DFAKE_DRIVER_NOT_LOADED | -DFAKE_OLD_DRIVER]
 *
 *   (no flag)               a normal driver: 2 GPUs, GetMemoryInfo_v2, events,
 *                           processes; power unsupported on GPU 1, ECC and
 *                           remapped rows unsupported on both.
 *   -DFAKE_DRIVER_NOT_LOADED nvmlInit_v2 returns NVML_ERROR_DRIVER_NOT_LOADED (9).
 *   -DFAKE_OLD_DRIVER       exports only nvmlInit_v2, nvmlShutdown,
 *                           nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2,
 *                           nvmlDeviceGetName, nvmlDeviceGetUUID and
 *                           nvmlDeviceGetMemoryInfo (no _v2 memory call):
 *                           calling anything else is a "symbol lookup error"
 *                           that kills the process, as with a real old driver.
 *
 * Every function exits the process with status 86 when it is called without
 * a successful nvmlInit, so the test sees any call after a failed Init.
 * nvmlErrorString is deliberately absent: the adapter must never call it.
 * The values here are mirrored in fakelib_test.go.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25

#define GIB (1024ULL * 1024ULL * 1024ULL)
#define MIB (1024ULL * 1024ULL)
#define NDEV 2

struct fake_device { int index; };
typedef struct fake_device *nvmlDevice_t;
struct fake_event_set { int waits; };
typedef struct fake_event_set *nvmlEventSet_t;

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
	char busIdLegacy[16];
	unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;
typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;
typedef struct {
	nvmlDevice_t device;
	unsigned long long eventType, eventData;
	unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

static struct fake_device devices[NDEV] = {{0}, {1}};
static struct fake_event_set event_set;
static int initialized;

#define CHECK_INIT()                                                                   \
	do {                                                                           \
		if (!initialized) {                                                    \
			fprintf(stderr, "FAKE-NVML: %s called without a successful nvmlInit\n", __func__); \
			_exit(86);                                                     \
		}                                                                      \
	} while (0)

#define CHECK_DEVICE(d)                                                                \
	do {                                                                           \
		CHECK_INIT();                                                          \
		if ((d) != &devices[0] && (d) != &devices[1])                          \
			return NVML_ERROR_INVALID_ARGUMENT;                            \
	} while (0)

nvmlReturn_t nvmlInit_v2(void) {
#ifdef FAKE_DRIVER_NOT_LOADED
	return NVML_ERROR_DRIVER_NOT_LOADED;
#else
	initialized = 1;
	return NVML_SUCCESS;
#endif
}

nvmlReturn_t nvmlShutdown(void) {
	CHECK_INIT();
	initialized = 0;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
	CHECK_INIT();
	*count = NDEV;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
	CHECK_INIT();
	if (index >= NDEV)
		return NVML_ERROR_INVALID_ARGUMENT;
	*device = &devices[index];
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
	CHECK_DEVICE(d);
	snprintf(name, length, "Fake GPU %d", d->index);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
	CHECK_DEVICE(d);
	snprintf(uuid, length, "GPU-fa4e0000-0000-4000-8000-%012d", d->index);
	return NVML_SUCCESS;
}

/* v1: "used" includes the driver-reserved 512 MiB. */
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
	CHECK_DEVICE(d);
	m->total = 80 * GIB;
	m->used = (10 + d->index) * GIB + 512 * MIB;
	m->free = m->total - m->used;
	return NVML_SUCCESS;
}

#ifndef FAKE_OLD_DRIVER

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
	CHECK_DEVICE(d);
	if (m->version != (unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))
		return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
	m->total = 80 * GIB;
	m->reserved = 512 * MIB;
	m->used = (10 + d->index) * GIB;
	m->free = m->total - m->reserved - m->used;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) {
	CHECK_DEVICE(d);
	*index = d->index;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *p) {
	CHECK_DEVICE(d);
	memset(p, 0, sizeof *p);
	p->bus = 0x3b + d->index;
	p->pciDeviceId = 0x233010DE;
	snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "0000:%02X:00.0", p->bus);
	snprintf(p->busId, sizeof p->busId, "00000000:%02X:00.0", p->bus);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
	CHECK_DEVICE(d);
	u->gpu = 42 + d->index;
	u->memory = 17 + d->index;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
	CHECK_DEVICE(d);
	if (d->index == 1)
		return NVML_ERROR_NOT_SUPPORTED;
	*mw = 123456;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t) {
	CHECK_DEVICE(d);
	if (sensor != 0)
		return NVML_ERROR_INVALID_ARGUMENT;
	*t = 55 + d->index;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
	CHECK_DEVICE(d);
	if (type != 1) /* NVML_CLOCK_SM */
		return NVML_ERROR_INVALID_ARGUMENT;
	*mhz = 1980;
	return NVML_SUCCESS;
}

/* GPU 0 runs one process (pid 4242, 1 GiB); GPU 1 none. */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
	CHECK_DEVICE(d);
	unsigned int n = d->index == 0 ? 1 : 0;
	if (*count < n) {
		*count = n;
		return NVML_ERROR_INSUFFICIENT_SIZE;
	}
	*count = n;
	if (n == 1) {
		infos[0].pid = 4242;
		infos[0].usedGpuMemory = 1 * GIB;
		infos[0].gpuInstanceId = 0xFFFFFFFF;
		infos[0].computeInstanceId = 0xFFFFFFFF;
	}
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length) {
	CHECK_INIT();
	snprintf(name, length, "fake-runner-%u", pid);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int type, int counter, unsigned long long *count) {
	CHECK_DEVICE(d);
	return NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t d, unsigned int *corr, unsigned int *unc, unsigned int *pending, unsigned int *failed) {
	CHECK_DEVICE(d);
	return NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
	CHECK_INIT();
	snprintf(version, length, "999.99.01");
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
	CHECK_INIT();
	snprintf(version, length, "12.999.99.01");
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
	CHECK_INIT();
	event_set.waits = 0;
	*set = &event_set;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types) {
	CHECK_DEVICE(d);
	*types = 0x8; /* nvmlEventTypeXidCriticalError */
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
	CHECK_DEVICE(d);
	return set == &event_set ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

/* The first wait reports Xid 79 on GPU 1; later waits time out after 20 ms. */
nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
	CHECK_INIT();
	if (set != &event_set)
		return NVML_ERROR_INVALID_ARGUMENT;
	if (set->waits++ == 0) {
		memset(data, 0, sizeof *data);
		data->device = &devices[1];
		data->eventType = 0x8;
		data->eventData = 79;
		return NVML_SUCCESS;
	}
	usleep((timeoutms < 20 ? timeoutms : 20) * 1000);
	return NVML_ERROR_TIMEOUT;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
	CHECK_INIT();
	return NVML_SUCCESS;
}

#endif /* FAKE_OLD_DRIVER */
