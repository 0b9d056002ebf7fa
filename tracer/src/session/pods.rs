//! The names of the pods and containers on this node, read from the kubelet's
//! log directories at the start and again with each rescan of the hierarchy:
//! a pod started during a session is named by its end.

use std::path::PathBuf;

use crate::workload::names::PodNames;

pub struct Pods {
    dir: PathBuf,
    names: PodNames,
    /// The last error reading `dir`, told once until it changes: an agent
    /// rescans every interval, and one line is enough.
    told: Option<String>,
}

impl Pods {
    pub fn new(dir: PathBuf) -> Self {
        let mut pods = Self {
            dir,
            names: PodNames::default(),
            told: None,
        };
        pods.rescan();
        pods
    }

    /// Reads the directory again. On an error the names read before stay:
    /// a pod's name does not change, and a report with them is better than
    /// one without.
    pub fn rescan(&mut self) {
        match PodNames::scan(&self.dir) {
            Ok(names) => {
                self.names = names;
                self.told = None;
            }
            Err(e) => {
                let text = format!("{e:#}");
                if self.told.as_ref() != Some(&text) {
                    eprintln!(
                        "warning: pods and containers are not named: {text} \
                         (--pods-log-dir sets the kubelet's pod log directory)"
                    );
                    self.told = Some(text);
                }
            }
        }
    }

    pub fn names(&self) -> &PodNames {
        &self.names
    }
}
