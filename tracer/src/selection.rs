//! Tasks reported on their own: processes and threads given with `--pid`, and
//! threads whose name matches a `--threads` pattern (found by scanning `/proc`,
//! again and again, since threads come and go).

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::process::{self, PidKind};

/// What a selection picks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A process (all its threads) or a single thread, by id.
    Pid {
        id: u32,
        kind: PidKind,
        comm: String,
    },
    /// Threads whose name (`comm`) matches a glob.
    Threads { pattern: String },
}

/// A thread matched by a `--threads` pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MatchedThread {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
}

/// Shell-style glob on a thread name: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match_class(&p, pi, t[ti]),
            Some(&c) => (c == t[ti]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((after, from))) => {
                pi = after;
                ti = from + 1;
                star = Some((after, from + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns the
/// pattern index after the class, or `None` (no match, or no closing `]`, in
/// which case `[` is taken literally).
fn match_class(p: &[char], start: usize, c: char) -> Option<usize> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while let Some(&x) = p.get(i) {
        if x == ']' && !first {
            return (matched != negate).then_some(i + 1);
        }
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            if (x..=p[i + 2]).contains(&c) {
                matched = true;
            }
            i += 3;
        } else {
            if x == c {
                matched = true;
            }
            i += 1;
        }
        first = false;
    }
    // Unclosed: a literal `[`.
    (c == '[').then_some(start + 1)
}

/// Finds threads matching the `--threads` patterns under a `/proc`-like tree.
#[derive(Debug, Default)]
pub struct ThreadScanner {
    /// (selection index, pattern).
    patterns: Vec<(u32, String)>,
    /// Threads already handed out.
    seen: HashSet<u32>,
    /// Matches per selection index.
    pub matched: BTreeMap<u32, Vec<MatchedThread>>,
}

impl ThreadScanner {
    pub fn new(patterns: Vec<(u32, String)>) -> Self {
        Self {
            patterns,
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Threads that match a pattern and were not found before, with the
    /// selection they belong to (a thread goes to the first pattern it matches).
    pub fn scan(&mut self, proc_root: &Path) -> Vec<(u32, u32)> {
        let mut found = Vec::new();
        if self.patterns.is_empty() {
            return found;
        }
        let Ok(processes) = std::fs::read_dir(proc_root) else {
            return found;
        };
        for process in processes.flatten() {
            let Some(tgid) = numeric(&process.file_name()) else {
                continue;
            };
            let Ok(threads) = std::fs::read_dir(process.path().join("task")) else {
                continue;
            };
            for thread in threads.flatten() {
                let Some(tid) = numeric(&thread.file_name()) else {
                    continue;
                };
                if self.seen.contains(&tid) {
                    continue;
                }
                let Ok(comm) = std::fs::read_to_string(thread.path().join("comm")) else {
                    continue;
                };
                let comm = comm.trim_end_matches('\n');
                if let Some(&(index, _)) = self.patterns.iter().find(|(_, p)| glob_match(p, comm)) {
                    self.seen.insert(tid);
                    self.matched.entry(index).or_default().push(MatchedThread {
                        tid,
                        tgid,
                        comm: comm.to_owned(),
                    });
                    found.push((tid, index));
                }
            }
        }
        found
    }
}

fn numeric(name: &std::ffi::OsStr) -> Option<u32> {
    name.to_str()?.parse().ok()
}

/// Resolves `--pid` values into targets (process or thread, and its name).
pub fn pid_target(id: u32) -> anyhow::Result<Target> {
    let info = process::describe(id)?;
    Ok(Target::Pid {
        id,
        kind: info.kind,
        comm: info.comm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("GC Thread*", "GC Thread#0"));
        assert!(glob_match("GC Thread*", "GC Thread"));
        assert!(!glob_match("GC Thread*", "G1 Conc#0"));
        assert!(glob_match("*Compiler*", "C2 CompilerThre"));
        assert!(glob_match("G1 ???c#*", "G1 Conc#12"));
        assert!(glob_match("worker-[0-9]", "worker-7"));
        assert!(!glob_match("worker-[0-9]", "worker-x"));
        assert!(glob_match("worker-[!0-9]", "worker-x"));
        assert!(glob_match("[]x]", "]"));
        assert!(glob_match("a[b", "a[b"), "an unclosed class is literal");
        assert!(glob_match("*", ""));
        assert!(!glob_match("?", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("java", "java"));
        assert!(!glob_match("java", "javac"));
    }

    #[test]
    fn scans_a_proc_tree_once_per_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let thread = |tgid: u32, tid: u32, comm: &str| {
            let dir = tmp.path().join(format!("{tgid}/task/{tid}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        };
        thread(100, 100, "java");
        thread(100, 101, "GC Thread#0");
        thread(100, 102, "GC Thread#1");
        thread(100, 103, "G1 Conc#0");
        thread(200, 200, "bash");
        std::fs::create_dir_all(tmp.path().join("self")).unwrap();
        let mut scanner = ThreadScanner::new(vec![(0, "GC Thread*".into()), (1, "G1 *".into())]);
        let mut found = scanner.scan(tmp.path());
        found.sort();
        assert_eq!(found, [(101, 0), (102, 0), (103, 1)]);
        // Known threads are not reported again; new ones are.
        thread(100, 104, "GC Thread#2");
        assert_eq!(scanner.scan(tmp.path()), [(104, 0)]);
        assert_eq!(scanner.matched[&0].len(), 3);
        assert_eq!(scanner.matched[&1][0].tgid, 100);
    }
}
