package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepeer/edgerelay/nvml"
)

// memoryCollector exposes what the GPU gauges lack to chart where GPU
// memory goes: NVML's per-process figure with the process's container, and
// the PyTorch allocator's figures per GPU (so that the allocator-versus-
// device gap is edgerelay_gpu_memory_used_bytes minus
// edgerelay_gpu_allocator_reserved_bytes). It reads the sampler's and the
// allocator registry's latest figures at scrape time; the same figures go
// to the sinks as gpu_process_sample and allocator_sample envelopes.
type memoryCollector struct {
	a    *Agent
	attr *nvml.Attributor // the container of a pid; cached while NVML lists it
}

var (
	descProcMem = prometheus.NewDesc("edgerelay_gpu_process_memory_used_bytes",
		"GPU memory NVML attributes to a process, with its container (empty outside one, or when the process is not visible from the agent's pid namespace).",
		[]string{"uuid", "index", "pid", "container_id"}, nil)
	descAllocAllocated = prometheus.NewDesc("edgerelay_gpu_allocator_allocated_bytes",
		"Bytes the PyTorch caching allocator has handed out on a GPU (allocated_bytes.all.current; summed over the GPU's processes), from the runner's latest snapshot; no series when none is fresh.",
		[]string{"uuid", "index"}, nil)
	descAllocReserved = prometheus.NewDesc("edgerelay_gpu_allocator_reserved_bytes",
		"Bytes the PyTorch caching allocator holds from the driver on a GPU (reserved_bytes.all.current; summed over the GPU's processes); the device's used memory minus this is what the allocator does not account for.",
		[]string{"uuid", "index"}, nil)
)

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descProcMem
	ch <- descAllocAllocated
	ch <- descAllocReserved
}

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	smp, gpus := c.a.sampler, c.a.gpus
	if smp == nil || gpus == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	var pids []int
	for i := range gpus.Count() {
		uuid, ok := smp.UUIDOf(i)
		if !ok {
			continue
		}
		index := strconv.Itoa(i)
		if dev, ok := smp.Latest(uuid, i); ok {
			for pid, used := range dev.ProcessUsed {
				at, _ := c.attr.Lookup(pid)
				gauge(descProcMem, float64(used), uuid, index, strconv.Itoa(pid), at.ContainerID)
				pids = append(pids, pid)
			}
		}
		if c.a.alloc != nil {
			if fig, ok := c.a.alloc.Latest(uuid); ok && !fig.Stale {
				gauge(descAllocAllocated, float64(fig.Allocated), uuid, index)
				gauge(descAllocReserved, float64(fig.Reserved), uuid, index)
			}
		}
	}
	c.attr.Retain(pids)
}
