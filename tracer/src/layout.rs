//! Builds the [`KernelLayout`] the eBPF programs read kernel structs with, from the
//! running kernel's BTF. Features are detected from what BTF contains, never from
//! the kernel version.

use anyhow::{Context as _, ensure};
use tracer_common::layout::{
    ABSENT, FEATURE_AUTOGROUP, FEATURE_EXIT_GROUP_DEAD, FEATURE_SWITCH_PREV_STATE,
    FEATURE_TASK_THROTTLE, FEATURE_WAKE_STAMP, KernelLayout, method,
};

use crate::btf::Btf;

/// Byte offset of a member that must exist and have the given size.
fn required(btf: &Btf, struct_name: &str, path: &str, size: u32) -> anyhow::Result<u32> {
    let loc = btf
        .member(struct_name, path)
        .with_context(|| format!("the tracer needs {struct_name}.{path}"))?;
    ensure!(
        loc.bitfield_size == 0 && loc.size == size,
        "{struct_name}.{path} is {} bytes{} in this kernel, the tracer expects {size}",
        loc.size,
        if loc.bitfield_size != 0 {
            " (a bitfield)"
        } else {
            ""
        }
    );
    Ok(loc.byte_offset)
}

/// Offset of an optional member, or [`ABSENT`].
fn optional(btf: &Btf, struct_name: &str, path: &str, size: u32) -> anyhow::Result<u32> {
    if btf.has_member(struct_name, path) {
        required(btf, struct_name, path, size)
    } else {
        Ok(ABSENT)
    }
}

/// Where `cfs_rq.throttled` is: byte offset and mask within that byte. A one-bit
/// bitfield since 6.18, an `int` before (whose low byte is read: little-endian).
fn throttled_flag(btf: &Btf) -> anyhow::Result<(u32, u32)> {
    let loc = btf
        .member("cfs_rq", "throttled")
        .context("the tracer needs cfs_rq.throttled")?;
    match (loc.bitfield_size, loc.size) {
        (1, _) => Ok((loc.byte_offset, 1 << loc.bit_in_byte)),
        (0, 1 | 4) => Ok((loc.byte_offset, 0xff)),
        (bits, size) => anyhow::bail!(
            "cfs_rq.throttled is {size} bytes ({bits}-bit field) in this kernel; the tracer \
             reads a bool bitfield or an int"
        ),
    }
}

/// The throttle clock fields of the first method this kernel has, with the rq
/// clock they are in: (method, total, start, clock).
fn throttle_clock(btf: &Btf) -> anyhow::Result<(u32, u32, u32, u32)> {
    let candidates = [
        (
            method::SELF_TIME,
            "throttled_clock_self_time",
            "throttled_clock_self",
            "clock",
        ),
        (
            method::TASK_CLOCK,
            "throttled_clock_task_time",
            "throttled_clock_task",
            "clock_task",
        ),
        (
            method::PELT_CLOCK,
            "throttled_clock_pelt_time",
            "throttled_clock_pelt",
            "clock_pelt",
        ),
    ];
    for (how, total, start, clock) in candidates {
        if btf.has_member("cfs_rq", total)
            && btf.has_member("cfs_rq", start)
            && btf.has_member("rq", clock)
        {
            return Ok((
                how,
                required(btf, "cfs_rq", total, 8)?,
                required(btf, "cfs_rq", start, 8)?,
                required(btf, "rq", clock, 8)?,
            ));
        }
    }
    Ok((method::STATE, ABSENT, ABSENT, ABSENT))
}

/// What the throttled time of a wait is measured with, for the report.
pub fn method_description(how: u32) -> &'static str {
    match how {
        method::SELF_TIME => {
            "cfs_rq.throttled_clock_self_time: the kernel's per-cgroup, per-CPU throttled time (6.6+)"
        }
        method::TASK_CLOCK => {
            "cfs_rq.throttled_clock_task_time: the kernel's throttled time on the task clock (up to 5.18)"
        }
        method::PELT_CLOCK => {
            "cfs_rq.throttled_clock_pelt_time: throttled time on the PELT clock (5.19 to 6.5; approximate)"
        }
        method::FENTRY => {
            "fentry on tg_throttle_down / tg_unthrottle_up: per-cgroup, per-CPU throttled time kept by the tracer"
        }
        _ => {
            "throttle state at the start of each wait (no throttle clock in this kernel; approximate)"
        }
    }
}

pub fn from_btf(btf: &Btf) -> anyhow::Result<KernelLayout> {
    let switch_args = btf
        .tracepoint_args("sched_switch")
        .context("the scheduler tracepoints are not in this kernel's BTF")?;
    let mut features = 0;
    if switch_args >= 4 {
        features |= FEATURE_SWITCH_PREV_STATE;
    }
    // Without the argument, selected processes stay selected until the end.
    if btf.tracepoint_args("sched_process_exit").unwrap_or(0) >= 2 {
        features |= FEATURE_EXIT_GROUP_DEAD;
    }
    // `state` became `__state` in 5.14; the programs read it only before 5.18.
    let task_state = if btf.has_member("task_struct", "__state") {
        required(btf, "task_struct", "__state", 4)?
    } else {
        optional(btf, "task_struct", "state", 8)?
    };
    ensure!(
        features & FEATURE_SWITCH_PREV_STATE != 0 || task_state != ABSENT,
        "this kernel's sched_switch has no prev_state argument and task_struct has no state field"
    );
    let tg_autogroup = optional(btf, "task_group", "autogroup", 8)?;
    if tg_autogroup != ABSENT {
        features |= FEATURE_AUTOGROUP;
    }
    // 6.18's task-based throttling marks the task itself.
    let task_throttled = optional(btf, "task_struct", "throttled", 1)?;
    if task_throttled != ABSENT {
        features |= FEATURE_TASK_THROTTLE;
    }
    // Where tasks are throttled, a wakeup's wait is never throttled, and the
    // kernel's enqueue stamp dates it: the wakeup programs are not needed.
    let task_last_queued = optional(btf, "task_struct", "sched_info.last_queued", 8)?;
    let task_run_delay = optional(btf, "task_struct", "sched_info.run_delay", 8)?;
    if task_throttled != ABSENT && task_last_queued != ABSENT && task_run_delay != ABSENT {
        features |= FEATURE_WAKE_STAMP;
    }
    ensure!(
        btf.has_member("cfs_rq", "throttle_count"),
        "this kernel has no CFS bandwidth control (cfs_rq.throttle_count; CONFIG_CFS_BANDWIDTH)"
    );
    let (cfs_rq_throttled, cfs_rq_throttled_mask) = throttled_flag(btf)?;
    let (throttle_method, cfs_rq_throttle_time, cfs_rq_throttle_start, rq_throttle_clock) =
        throttle_clock(btf)?;
    Ok(KernelLayout {
        task_pid: required(btf, "task_struct", "pid", 4)?,
        task_tgid: required(btf, "task_struct", "tgid", 4)?,
        task_state,
        task_sched_task_group: required(btf, "task_struct", "sched_task_group", 8)
            .context("the kernel needs CONFIG_CGROUP_SCHED")?,
        task_cfs_rq: required(btf, "task_struct", "se.cfs_rq", 8)
            .context("the kernel needs CONFIG_FAIR_GROUP_SCHED")?,
        task_throttled,
        task_group_leader: required(btf, "task_struct", "group_leader", 8)?,
        task_comm: required(btf, "task_struct", "comm", 16)?,
        tg_css_cgroup: required(btf, "task_group", "css.cgroup", 8)?,
        tg_autogroup,
        tg_parent: required(btf, "task_group", "parent", 8)?,
        tg_cfs_rq: required(btf, "task_group", "cfs_rq", 8)?,
        cgroup_kn: required(btf, "cgroup", "kn", 8)?,
        kn_id: required(btf, "kernfs_node", "id", 8)?,
        kn_name: required(btf, "kernfs_node", "name", 8)?,
        cfs_rq_rq: required(btf, "cfs_rq", "rq", 8)?,
        cfs_rq_tg: required(btf, "cfs_rq", "tg", 8)?,
        cfs_rq_load_weight: required(btf, "cfs_rq", "load.weight", 8)?,
        cfs_rq_throttle_count: required(btf, "cfs_rq", "throttle_count", 4)?,
        cfs_rq_throttled,
        cfs_rq_throttled_mask,
        cfs_rq_throttle_time,
        cfs_rq_throttle_start,
        rq_throttle_clock,
        rq_cpu: required(btf, "rq", "cpu", 4)?,
        rq_clock: required(btf, "rq", "clock", 8)?,
        task_last_arrival: optional(btf, "task_struct", "sched_info.last_arrival", 8)?,
        task_last_queued,
        task_run_delay,
        task_pcount: optional(btf, "task_struct", "sched_info.pcount", 8)?,
        throttle_method,
        features,
    })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, process::Command};

    use super::*;
    use crate::btf::{VMLINUX, tests::Builder};

    /// How a synthetic kernel differs from 6.18.
    struct Kernel {
        /// 5.18+: `prev_state` argument of sched_switch.
        prev_state: bool,
        /// `__state` (5.14+) or `state`.
        state_name: &'static str,
        /// 6.18+: `task_struct.throttled`, and `cfs_rq.throttled` as a bitfield.
        task_throttle: bool,
        /// The cfs_rq throttle clock fields: `self`, `task`, `pelt` or none.
        clock: Option<&'static str>,
        /// `sched_process_exit` passes `group_dead`.
        exit_group_dead: bool,
    }

    const V6_18: Kernel = Kernel {
        prev_state: true,
        state_name: "__state",
        task_throttle: true,
        clock: Some("self"),
        exit_group_dead: true,
    };

    /// A kernel's worth of BTF for the fields the tracer reads, at known offsets.
    fn synthetic(k: &Kernel) -> Btf {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let u32_ = b.int("unsigned int", 4);
        let u64_ = b.int("long long unsigned int", 8);
        let boolean = b.int("_Bool", 1);
        let char_ = b.int("char", 1);
        let char_ptr = b.ptr(char_);
        let comm = b.array(char_, int, 16);
        let kn = b.composite(
            false,
            "kernfs_node",
            128,
            &[("name", char_ptr, 64 * 8, 0), ("id", u64_, 96 * 8, 0)],
        );
        let kn_ptr = b.ptr(kn);
        let cgroup = b.composite(false, "cgroup", 512, &[("kn", kn_ptr, 256 * 8, 0)]);
        let cgroup_ptr = b.ptr(cgroup);
        let css = b.composite(
            false,
            "cgroup_subsys_state",
            200,
            &[("cgroup", cgroup_ptr, 0, 0)],
        );
        let rq = b.composite(
            false,
            "rq",
            4096,
            &[
                ("cpu", int, 100 * 8, 0),
                ("clock", u64_, 200 * 8, 0),
                ("clock_task", u64_, 208 * 8, 0),
                ("clock_pelt", u64_, 216 * 8, 0),
            ],
        );
        let rq_ptr = b.ptr(rq);
        let void_ptr = b.ptr(0);
        let load = b.composite(false, "load_weight", 16, &[("weight", u64_, 0, 0)]);
        let mut cfs_rq_members = vec![
            ("load", load, 0, 0),
            ("rq", rq_ptr, 312 * 8, 0),
            ("tg", void_ptr, 344 * 8, 0),
            ("throttle_count", int, 420 * 8, 0),
        ];
        let (start, total) = match k.clock {
            Some("self") => ("throttled_clock_self", "throttled_clock_self_time"),
            Some("task") => ("throttled_clock_task", "throttled_clock_task_time"),
            Some("pelt") => ("throttled_clock_pelt", "throttled_clock_pelt_time"),
            _ => ("", ""),
        };
        if !start.is_empty() {
            cfs_rq_members.push((start, u64_, 400 * 8, 0));
            cfs_rq_members.push((total, u64_, 408 * 8, 0));
        }
        if k.task_throttle {
            cfs_rq_members.push(("throttled", boolean, 416 * 8, 1));
            cfs_rq_members.push(("pelt_clock_throttled", boolean, 416 * 8 + 1, 1));
        } else {
            cfs_rq_members.push(("throttled", int, 416 * 8, 0));
        }
        let cfs_rq = b.composite(false, "cfs_rq", 512, &cfs_rq_members);
        let cfs_rq_ptr = b.ptr(cfs_rq);
        let cfs_rq_ptr_ptr = b.ptr(cfs_rq_ptr);
        let se = b.composite(
            false,
            "sched_entity",
            256,
            &[("cfs_rq", cfs_rq_ptr, 168 * 8, 0)],
        );
        let tg = b.composite(
            false,
            "task_group",
            512,
            &[
                ("css", css, 0, 0),
                ("cfs_rq", cfs_rq_ptr_ptr, 224 * 8, 0),
                ("parent", void_ptr, 408 * 8, 0),
                ("autogroup", void_ptr, 448 * 8, 0),
            ],
        );
        let tg_ptr = b.ptr(tg);
        let state_ty = if k.state_name == "__state" {
            u32_
        } else {
            u64_
        };
        let sched_info = b.composite(
            false,
            "sched_info",
            32,
            &[
                ("pcount", u64_, 0, 0),
                ("run_delay", u64_, 8 * 8, 0),
                ("last_arrival", u64_, 16 * 8, 0),
                ("last_queued", u64_, 24 * 8, 0),
            ],
        );
        let mut task_members = vec![
            (k.state_name, state_ty, 24 * 8, 0),
            ("sched_info", sched_info, 1500 * 8, 0),
            ("se", se, 128 * 8, 0),
            ("sched_task_group", tg_ptr, 712 * 8, 0),
            ("pid", int, 1264 * 8, 0),
            ("tgid", int, 1268 * 8, 0),
            ("group_leader", void_ptr, 1300 * 8, 0),
            ("comm", comm, 1400 * 8, 0),
        ];
        if k.task_throttle {
            task_members.push(("throttled", boolean, 752 * 8, 0));
        }
        let task = b.composite(false, "task_struct", 4096, &task_members);
        let task_ptr = b.ptr(task);
        let mut params = vec![void_ptr, boolean, task_ptr, task_ptr];
        if k.prev_state {
            params.push(u32_);
        }
        let proto = b.func_proto(0, &params);
        let fptr = b.ptr(proto);
        b.typedef("btf_trace_sched_switch", fptr);
        let mut exit_params = vec![void_ptr, task_ptr];
        if k.exit_group_dead {
            exit_params.push(boolean);
        }
        let exit_proto = b.func_proto(0, &exit_params);
        let exit_ptr = b.ptr(exit_proto);
        b.typedef("btf_trace_sched_process_exit", exit_ptr);
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn offsets_from_synthetic_btf() {
        let layout = from_btf(&synthetic(&V6_18)).unwrap();
        assert_eq!(
            layout,
            KernelLayout {
                task_pid: 1264,
                task_tgid: 1268,
                task_state: 24,
                task_sched_task_group: 712,
                task_cfs_rq: 296,
                task_throttled: 752,
                task_group_leader: 1300,
                task_comm: 1400,
                tg_css_cgroup: 0,
                tg_autogroup: 448,
                tg_parent: 408,
                tg_cfs_rq: 224,
                cgroup_kn: 256,
                kn_id: 96,
                kn_name: 64,
                cfs_rq_rq: 312,
                cfs_rq_tg: 344,
                cfs_rq_load_weight: 0,
                cfs_rq_throttle_count: 420,
                cfs_rq_throttled: 416,
                cfs_rq_throttled_mask: 1,
                cfs_rq_throttle_time: 408,
                cfs_rq_throttle_start: 400,
                rq_throttle_clock: 200,
                rq_cpu: 100,
                rq_clock: 200,
                task_last_arrival: 1500 + 16,
                task_last_queued: 1500 + 24,
                task_run_delay: 1500 + 8,
                task_pcount: 1500,
                throttle_method: method::SELF_TIME,
                features: FEATURE_SWITCH_PREV_STATE
                    | FEATURE_AUTOGROUP
                    | FEATURE_TASK_THROTTLE
                    | FEATURE_EXIT_GROUP_DEAD
                    | FEATURE_WAKE_STAMP,
            }
        );
    }

    #[test]
    fn older_kernels_choose_their_throttle_clock() {
        // 5.19 to 6.5: PELT clock, `throttled` an int, no task throttling.
        let v6_1 = from_btf(&synthetic(&Kernel {
            task_throttle: false,
            clock: Some("pelt"),
            ..V6_18
        }))
        .unwrap();
        assert_eq!(v6_1.throttle_method, method::PELT_CLOCK);
        assert_eq!(v6_1.rq_throttle_clock, 216);
        assert_eq!(
            (v6_1.cfs_rq_throttled, v6_1.cfs_rq_throttled_mask),
            (416, 0xff)
        );
        assert_eq!(v6_1.task_throttled, ABSENT);
        assert_eq!(v6_1.features & FEATURE_TASK_THROTTLE, 0);
        assert_eq!(
            v6_1.features & FEATURE_WAKE_STAMP,
            0,
            "a wakeup's wait may be throttled where whole cfs_rqs are"
        );
        assert_eq!(v6_1.task_last_queued, 1500 + 24, "found all the same");
        let no_group_dead = from_btf(&synthetic(&Kernel {
            exit_group_dead: false,
            ..V6_18
        }))
        .unwrap();
        assert_eq!(no_group_dead.features & FEATURE_EXIT_GROUP_DEAD, 0);

        // Up to 5.18: the task clock.
        let v5_10 = from_btf(&synthetic(&Kernel {
            task_throttle: false,
            clock: Some("task"),
            ..V6_18
        }))
        .unwrap();
        assert_eq!(v5_10.throttle_method, method::TASK_CLOCK);
        assert_eq!(v5_10.rq_throttle_clock, 208);

        let none = from_btf(&synthetic(&Kernel {
            clock: None,
            ..V6_18
        }))
        .unwrap();
        assert_eq!(none.throttle_method, method::STATE);
        assert_eq!(none.cfs_rq_throttle_time, ABSENT);
    }

    #[test]
    fn old_kernels_read_the_state_field() {
        // Before 5.18 sched_switch has no prev_state argument; before 5.14 the
        // field is `long state`, whose low 32 bits the programs read (little-endian).
        for state_name in ["state", "__state"] {
            let layout = from_btf(&synthetic(&Kernel {
                prev_state: false,
                state_name,
                ..V6_18
            }))
            .unwrap();
            assert_eq!(layout.features & FEATURE_SWITCH_PREV_STATE, 0);
            assert_eq!(layout.task_state, 24);
        }
    }

    fn real_btf() -> Option<Btf> {
        Path::new(VMLINUX)
            .exists()
            .then(|| Btf::from_sys_fs().expect("this kernel's BTF parses"))
    }

    #[test]
    fn this_kernels_btf_has_every_field() {
        let Some(btf) = real_btf() else {
            eprintln!("no {VMLINUX}: nothing to check");
            return;
        };
        let layout = from_btf(&btf).unwrap();
        // Structural facts that hold on every kernel: tgid follows pid, the css is
        // the first member of task_group and its cgroup pointer is css's first member.
        assert_eq!(layout.task_tgid, layout.task_pid + 4);
        assert_eq!(layout.tg_css_cgroup, 0);
        assert_ne!(layout.task_sched_task_group, ABSENT);
        assert!(
            layout.features & FEATURE_SWITCH_PREV_STATE != 0,
            "5.18+ expected here"
        );
    }

    /// Cross-checks every offset against bpftool's own BTF reader when it is installed.
    #[test]
    fn this_kernels_offsets_match_bpftool() {
        let Some(btf) = real_btf() else { return };
        let Ok(out) = Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output()
        else {
            eprintln!("bpftool not installed: cross-check skipped");
            return;
        };
        assert!(out.status.success(), "bpftool failed");
        let dump = String::from_utf8_lossy(&out.stdout);
        let bits_in = |st: &str, member: &str| -> u32 {
            let header = format!("STRUCT '{st}' size=");
            let start = dump
                .lines()
                .position(|l| l.contains(&header) && !l.contains("vlen=0"))
                .unwrap_or_else(|| panic!("bpftool shows no struct {st}"));
            let needle = format!("'{member}' type_id=");
            let line = dump
                .lines()
                .skip(start + 1)
                .take_while(|l| l.starts_with('\t'))
                .find(|l| l.trim_start().starts_with(&needle))
                .unwrap_or_else(|| panic!("bpftool shows no {st}.{member}"));
            let bits: u32 = line
                .split("bits_offset=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap()
                .parse()
                .unwrap();
            bits
        };
        let offset_in = |st: &str, member: &str| bits_in(st, member) / 8;
        let layout = from_btf(&btf).unwrap();
        assert_eq!(layout.task_pid, offset_in("task_struct", "pid"));
        assert_eq!(layout.task_tgid, offset_in("task_struct", "tgid"));
        assert_eq!(layout.task_state, offset_in("task_struct", "__state"));
        assert_eq!(
            layout.task_sched_task_group,
            offset_in("task_struct", "sched_task_group")
        );
        assert_eq!(layout.tg_parent, offset_in("task_group", "parent"));
        assert_eq!(layout.tg_autogroup, offset_in("task_group", "autogroup"));
        assert_eq!(layout.cgroup_kn, offset_in("cgroup", "kn"));
        assert_eq!(layout.kn_id, offset_in("kernfs_node", "id"));
        assert_eq!(layout.kn_name, offset_in("kernfs_node", "name"));
        assert_eq!(
            layout.tg_css_cgroup,
            offset_in("task_group", "css") + offset_in("cgroup_subsys_state", "cgroup")
        );
        assert_eq!(
            layout.task_cfs_rq,
            offset_in("task_struct", "se") + offset_in("sched_entity", "cfs_rq")
        );
        assert_eq!(
            layout.task_group_leader,
            offset_in("task_struct", "group_leader")
        );
        assert_eq!(layout.task_comm, offset_in("task_struct", "comm"));
        assert_eq!(layout.tg_cfs_rq, offset_in("task_group", "cfs_rq"));
        assert_eq!(layout.cfs_rq_rq, offset_in("cfs_rq", "rq"));
        assert_eq!(layout.cfs_rq_tg, offset_in("cfs_rq", "tg"));
        assert_eq!(
            layout.cfs_rq_throttle_count,
            offset_in("cfs_rq", "throttle_count")
        );
        assert_eq!(layout.rq_cpu, offset_in("rq", "cpu"));
        assert_eq!(layout.rq_clock, offset_in("rq", "clock"));
        for (field, offset) in [
            ("last_arrival", layout.task_last_arrival),
            ("last_queued", layout.task_last_queued),
            ("run_delay", layout.task_run_delay),
            ("pcount", layout.task_pcount),
        ] {
            assert_eq!(
                offset,
                offset_in("task_struct", "sched_info") + offset_in("sched_info", field),
                "sched_info.{field}"
            );
        }
        assert_eq!(layout.cfs_rq_load_weight, offset_in("cfs_rq", "load"));
        let throttled_bits = bits_in("cfs_rq", "throttled");
        assert_eq!(layout.cfs_rq_throttled, throttled_bits / 8);
        if layout.cfs_rq_throttled_mask != 0xff {
            assert_eq!(layout.cfs_rq_throttled_mask, 1 << (throttled_bits % 8));
        }
        if layout.features & FEATURE_TASK_THROTTLE != 0 {
            assert_eq!(layout.task_throttled, offset_in("task_struct", "throttled"));
        }
        if layout.throttle_method == method::SELF_TIME {
            assert_eq!(
                layout.cfs_rq_throttle_time,
                offset_in("cfs_rq", "throttled_clock_self_time")
            );
            assert_eq!(
                layout.cfs_rq_throttle_start,
                offset_in("cfs_rq", "throttled_clock_self")
            );
            assert_eq!(layout.rq_throttle_clock, offset_in("rq", "clock"));
        }
    }
}
