//! CPU weights in contention blame: what the occupant ran, against the
//! kernel's own count, and what each weight guarantees, against the weights
//! the test set and the way CFS shares a CPU by them.

use std::time::Duration;

use libtest_mimic::{Completion, Trial};
use tracer::{session::Config, verdict::Kind};
use tracer_tests::{
    Load, TestCgroup, Worker, ran_ns,
    services::{sample_value, wait_for},
};

use crate::{Scratch, TestResult, cgroup_in, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![privileged(
        "contention_blame_weighs_the_occupant_as_cfs_does",
        weighed,
    )]
}

/// Two sibling cgroups, weighted 3 to 1, each with a hog pinned to one CPU.
/// CFS gives the heavy one three quarters of the CPU: the light one waits
/// behind it, and the blame row says how much the heavy one ran (the
/// kernel's `sum_exec_runtime` of its hog) and what its weight guarantees
/// (three times the light one's, the two together at most their parent's).
fn weighed() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let parent = TestCgroup::create("weights")?;
    let heavy = parent.child("heavy")?;
    let light = parent.child("light")?;
    let (file, heavy_value) = heavy.set_shares(3072)?;
    light.set_shares(1024)?;
    let session = crate::start_session(Config::default())?;
    let heavy_hog = Worker::start(Load::Spin, &heavy, busy)?;
    let light_hog = Worker::start(Load::Spin, &light, busy)?;
    std::thread::sleep(Duration::from_secs(3));
    // Read just before the hogs go: their whole lives lie inside the session.
    let kernel_heavy = ran_ns(heavy_hog.pid)?;
    let kernel_light = ran_ns(light_hog.pid)?;
    heavy_hog.stop();
    light_hog.stop();
    let rec = session.stop()?;

    let l = cgroup_in(&rec, &light)?;
    let h = cgroup_in(&rec, &heavy)?;
    let blame = l
        .wait
        .blame
        .iter()
        .find(|b| b.path == heavy.path)
        .ok_or_else(|| {
            format!(
                "{} is not blamed for {}: {:?}",
                heavy.path, light.path, l.wait.blame
            )
        })?;
    let (hw, lw) = (
        blame.weight.clone().ok_or("the blame row has no weight")?,
        l.weight.clone().ok_or("the light cgroup has no weight")?,
    );
    measured(format!(
        "{}: ran {} ns (kernel {kernel_heavy}), {} {} guarantees {} mCPU; {}: ran {} ns (kernel \
         {kernel_light}), guaranteed {} mCPU",
        heavy.path,
        blame.ran_ns,
        hw.file,
        hw.value,
        hw.guaranteed_mcpu,
        light.path,
        l.on_cpu.summary.total_ns,
        lw.guaranteed_mcpu
    ));
    check(hw.file == file && hw.value == heavy_value, || {
        format!(
            "the blame row says {} {}, the test wrote {file} {heavy_value}",
            hw.file, hw.value
        )
    })?;
    // The blame row's run is the occupant's whole run, as the kernel counts
    // it (a hog's exit adds a few ms).
    let near = |traced: u64, kernel: u64| traced.abs_diff(kernel) <= kernel / 50 + 20_000_000;
    check(near(blame.ran_ns, kernel_heavy), || {
        format!(
            "traced {} ns for {}, the kernel {kernel_heavy}",
            blame.ran_ns, heavy.path
        )
    })?;
    check(near(l.on_cpu.summary.total_ns, kernel_light), || {
        format!(
            "traced {} ns for {}, the kernel {kernel_light}",
            l.on_cpu.summary.total_ns, light.path
        )
    })?;
    // Siblings split their parent's guarantee in their weights' ratio.
    let (hg, lg) = (hw.guaranteed_mcpu, lw.guaranteed_mcpu);
    check(lg > 0 && hg.abs_diff(3 * lg) <= 3, || {
        format!("guarantees {hg} and {lg} mCPU for weights 3:1")
    })?;
    check(hg + lg <= 1_000 * rec.cpus as u64 + 1, || {
        format!("{hg} + {lg} mCPU guaranteed on {} CPUs", rec.cpus)
    })?;
    // CFS gave the heavy hog about three times the light one's CPU.
    let ratio = kernel_heavy as f64 / kernel_light.max(1) as f64;
    check((2.4..=3.75).contains(&ratio), || {
        format!("the heavy hog ran {ratio:.2} times the light one's time, not about 3")
    })?;
    check(h.weight.as_ref() == Some(&hw), || {
        format!(
            "{}'s own weight {:?} differs from its blame row's {hw:?}",
            heavy.path, h.weight
        )
    })?;
    check(l.verdict.kind == Kind::HostContention, || {
        format!("verdict: {}", l.verdict.text)
    })?;
    let said = format!("guaranteed by its {file} of {heavy_value}");
    check(l.verdict.text.contains(&said), || {
        format!(
            "the verdict does not weigh the occupant ({said}): {}",
            l.verdict.text
        )
    })?;
    let report = tracer::report::render(&rec, tracer::report::TextOptions::default());
    check(report.contains("  their weights: "), || {
        format!("the report shows no weights:\n{report}")
    })?;

    // The agent exports the same guarantees for the cgroups it exports.
    let Ok(bin) = crate::bin() else {
        return Ok(Completion::ignored_with(
            "tracer binary not built: the agent's part was not run",
        ));
    };
    let scratch = Scratch::new("weights")?;
    let agent = crate::agent(&bin, &scratch, "1s", &[], true)?;
    let _hogs = [
        Worker::start(Load::Spin, &heavy, busy)?,
        Worker::start(Load::Spin, &light, busy)?,
    ];
    let exported = |page: &str, cg: &TestCgroup| {
        sample_value(
            page,
            "tracer_cpu_weight_guaranteed_cpus",
            &[("cgroup", &cg.path)],
        )
    };
    let page = wait_for(
        "both cgroups' guarantees on /metrics",
        Duration::from_secs(20),
        || {
            let page = agent.metrics().ok()?;
            (exported(&page, &heavy).is_some() && exported(&page, &light).is_some()).then_some(page)
        },
    )?;
    let (he, le) = (
        exported(&page, &heavy).unwrap_or(0.0),
        exported(&page, &light).unwrap_or(0.0),
    );
    measured(format!("agent: guaranteed {he} and {le} CPUs"));
    check(
        (he - hw.guaranteed_cpus()).abs() < 0.0015 && (le - lw.guaranteed_cpus()).abs() < 0.0015,
        || format!("the agent exports {he} and {le} CPUs, the recording said {hg} and {lg} mCPU"),
    )?;
    Ok(Completion::Completed)
}
