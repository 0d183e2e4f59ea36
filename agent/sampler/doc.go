// Package sampler turns the GPUs (package nvml) and the host's network
// interfaces (package hostnet) into events, and serves the latest GPU
// figures as Prometheus gauges and to the allocator join.
//
// One goroutine, Run, samples everything on its cadences (spec/nvml.md,
// "What to sample"): every Interval the memory, utilization, temperature,
// power and SM clock of each GPU, and the host's interfaces; every
// ProcessInterval the processes on each GPU and the runners' network
// namespaces; every ECCInterval the ECC and remapped-row counters. NVML calls therefore never overlap, except the Xid
// event wait, which runs in a second goroutine that Run starts and waits
// for.
//
// # Families
//
// Events leave through Options.Emit as (family, data); the caller stamps the
// envelope (id, timestamp, node identity, data.type, data.client_source).
//
//	gpu_memory_sample     one per GPU per tick. The stormlog v3 fields
//	                      (schema_version 3, session_id, timestamp_ns,
//	                      event_type "sample", collector "edgerelay.nvml",
//	                      sampling_interval_ms, pid -1, host, device_id = the
//	                      local index, allocator_* from the runner's latest
//	                      figures or 0/null with metadata.allocator_source
//	                      "none", device_used/free/total_bytes, context null,
//	                      metadata, job_id null, rank 0, local_rank 0,
//	                      world_size 1), plus gpu_id (UUID), name, pci_bus_id,
//	                      memory_info_version, memory_reserved_bytes,
//	                      utilization_gpu_pct, utilization_memory_pct,
//	                      temperature_c, power_mw, sm_clock_mhz, and from the
//	                      slow cadence ecc_volatile_uncorrected,
//	                      ecc_volatile_corrected, ecc_aggregate_uncorrected,
//	                      remapped_rows_correctable, remapped_rows_uncorrectable,
//	                      remapped_rows_pending, remapped_rows_failure, and
//	                      gpu_idle: false when a session uses the GPU (its
//	                      id is then the session_id: see Options.SessionFor),
//	                      true otherwise. A
//	                      reading the GPU does not support is absent, never 0.
//	                      A GPU whose memory cannot be read that tick emits
//	                      nothing (counted, reason "no_memory").
//	gpu_process_sample    one per (GPU, process) per process interval: gpu_id,
//	                      device_id, pid (host pid), used_gpu_memory_bytes,
//	                      process_name, container_id, cgroup, pipeline,
//	                      model_id, session_id (the session whose runner is
//	                      the process or an ancestor of it); unknown ones
//	                      absent.
//	gpu_xid_event         a critical Xid error: gpu_id, device_id, name,
//	                      pci_bus_id, xid.
//	gpu_device_lost       a GPU stopped answering (ERROR_GPU_IS_LOST and
//	                      friends): gpu_id, device_id, name, pci_bus_id, error.
//	                      Emitted once per loss; the GPU's gpu_memory_sample
//	                      stops until it recovers.
//	gpu_device_recovered  a lost GPU answers again: gpu_id, device_id, name,
//	                      pci_bus_id, lost_for_ms.
//	host_network_sample   one per interface (not lo) per tick: see
//	                      hostnet.Reading.Data.
//	stream_bandwidth_sample one per session runner per process interval,
//	                      from the second reading on: see
//	                      hostnet.NSReading.Data. A runner whose figures
//	                      would not be its own gets none (counted by reason
//	                      in edgerelay_stream_bandwidth_skipped_total).
//
// Emit is never called concurrently, and each data map is the callee's to
// keep.
package sampler
