//! Builds the [`KernelLayout`] the eBPF programs read kernel structs with, from the
//! running kernel's BTF. Features are detected from what BTF contains, never from
//! the kernel version.

use anyhow::{Context as _, ensure};
use tracer_common::layout::{ABSENT, FEATURE_AUTOGROUP, FEATURE_SWITCH_PREV_STATE, KernelLayout};

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

pub fn from_btf(btf: &Btf) -> anyhow::Result<KernelLayout> {
    let switch_args = btf
        .tracepoint_args("sched_switch")
        .context("the scheduler tracepoints are not in this kernel's BTF")?;
    let mut features = 0;
    if switch_args >= 4 {
        features |= FEATURE_SWITCH_PREV_STATE;
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
    Ok(KernelLayout {
        task_pid: required(btf, "task_struct", "pid", 4)?,
        task_tgid: required(btf, "task_struct", "tgid", 4)?,
        task_state,
        task_sched_task_group: required(btf, "task_struct", "sched_task_group", 8)
            .context("the kernel needs CONFIG_CGROUP_SCHED")?,
        tg_css_cgroup: required(btf, "task_group", "css.cgroup", 8)?,
        tg_autogroup,
        tg_parent: required(btf, "task_group", "parent", 8)?,
        cgroup_kn: required(btf, "cgroup", "kn", 8)?,
        kn_id: required(btf, "kernfs_node", "id", 8)?,
        kn_name: required(btf, "kernfs_node", "name", 8)?,
        features,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, process::Command};

    use super::*;
    use crate::btf::{VMLINUX, tests::Builder};

    /// A kernel's worth of BTF for the fields the tracer reads, at known offsets.
    fn synthetic(with_prev_state: bool, state_name: &str) -> Btf {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let u32_ = b.int("unsigned int", 4);
        let u64_ = b.int("long long unsigned int", 8);
        let char_ = b.int("char", 1);
        let char_ptr = b.ptr(char_);
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
        let tg_fwd_ptr = b.ptr(0);
        let tg = b.composite(
            false,
            "task_group",
            512,
            &[
                ("css", css, 0, 0),
                ("parent", tg_fwd_ptr, 408 * 8, 0),
                ("autogroup", tg_fwd_ptr, 448 * 8, 0),
            ],
        );
        let tg_ptr = b.ptr(tg);
        let state_ty = if state_name == "__state" { u32_ } else { u64_ };
        let task = b.composite(
            false,
            "task_struct",
            4096,
            &[
                (state_name, state_ty, 24 * 8, 0),
                ("sched_task_group", tg_ptr, 712 * 8, 0),
                ("pid", int, 1264 * 8, 0),
                ("tgid", int, 1268 * 8, 0),
            ],
        );
        let task_ptr = b.ptr(task);
        let void_ptr = b.ptr(0);
        let boolean = b.int("_Bool", 1);
        let mut params = vec![void_ptr, boolean, task_ptr, task_ptr];
        if with_prev_state {
            params.push(u32_);
        }
        let proto = b.func_proto(0, &params);
        let fptr = b.ptr(proto);
        b.typedef("btf_trace_sched_switch", fptr);
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn offsets_from_synthetic_btf() {
        let layout = from_btf(&synthetic(true, "__state")).unwrap();
        assert_eq!(
            layout,
            KernelLayout {
                task_pid: 1264,
                task_tgid: 1268,
                task_state: 24,
                task_sched_task_group: 712,
                tg_css_cgroup: 0,
                tg_autogroup: 448,
                tg_parent: 408,
                cgroup_kn: 256,
                kn_id: 96,
                kn_name: 64,
                features: FEATURE_SWITCH_PREV_STATE | FEATURE_AUTOGROUP,
                _pad: 0,
            }
        );
    }

    #[test]
    fn old_kernels_read_the_state_field() {
        // Before 5.18 sched_switch has no prev_state argument; before 5.14 the
        // field is `long state`, whose low 32 bits the programs read (little-endian).
        for name in ["state", "__state"] {
            let layout = from_btf(&synthetic(false, name)).unwrap();
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
        let offset_in = |st: &str, member: &str| -> u32 {
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
            bits / 8
        };
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
    }
}
