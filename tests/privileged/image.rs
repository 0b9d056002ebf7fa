//! The image of `deploy/Containerfile`, built where a container builder
//! works: the DaemonSet runs it, so it must build and run the agent's binary.

use std::process::Command;

use libtest_mimic::{Completion, Trial};

use crate::{TestResult, check, measured, privileged};

pub fn tests() -> Vec<Trial> {
    vec![privileged(
        "the_containerfile_builds_an_image_that_runs_the_tracer",
        image,
    )]
}

/// The first builder that answers: podman, buildah (with podman to run the
/// image), or a docker client with a daemon behind it.
fn builder() -> Result<&'static str, String> {
    let mut tried = Vec::new();
    for (tool, probe) in [("podman", "info"), ("buildah", "info"), ("docker", "info")] {
        match Command::new(tool).arg(probe).output() {
            Ok(out) if out.status.success() => return Ok(tool),
            Ok(out) => tried.push(format!(
                "{tool} {probe} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            )),
            Err(_) => tried.push(format!("no {tool}")),
        }
    }
    Err(tried.join("; "))
}

fn image() -> TestResult {
    let tool = match builder() {
        Ok(tool) => tool,
        Err(why) => {
            return Ok(Completion::ignored_with(format!(
                "no container builder works here ({why})"
            )));
        }
    };
    // The base images come from registries this machine may not reach.
    for base in [
        "docker.io/library/debian:bookworm",
        "gcr.io/distroless/cc-debian12",
    ] {
        // A registry out of reach can keep a pull waiting for minutes.
        let pull = Command::new("timeout")
            .args(["120", tool, "pull", base])
            .output()?;
        if !pull.status.success() {
            return Ok(Completion::ignored_with(format!(
                "{tool} cannot pull {base}: {}",
                String::from_utf8_lossy(&pull.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )));
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tag = format!("localhost/tracer-test:{}", std::process::id());
    let (build, run) = match tool {
        "buildah" => ("bud", "podman"),
        _ => ("build", tool),
    };
    let built = Command::new(tool)
        .args([build, "-f", "deploy/Containerfile", "-t", &tag, "."])
        .current_dir(&root)
        .output()?;
    check(built.status.success(), || {
        format!(
            "{tool} {build} failed: {}",
            String::from_utf8_lossy(&built.stderr)
        )
    })?;
    let out = Command::new(run)
        .args(["run", "--rm", &tag, "--version"])
        .output()?;
    let _ = Command::new(run).args(["rmi", &tag]).output();
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    measured(version.trim().to_owned());
    check(
        out.status.success() && version.starts_with("tracer "),
        || {
            format!(
                "the image's entrypoint did not run the tracer: {version} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        },
    )?;
    Ok(Completion::Completed)
}
