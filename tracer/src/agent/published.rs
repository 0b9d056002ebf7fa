//! What the HTTP thread serves: the last snapshot, handed over by the agent's
//! loop after each refresh, and its pages, rendered on the HTTP thread (not
//! the loop's) once per refresh.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use super::{
    http::{self, Body, Response},
    metrics::{self, Snapshot},
};

/// The last snapshot, when it was taken, and its pages once rendered.
struct Current {
    snapshot: Snapshot,
    at: Instant,
    /// `/metrics` in the Prometheus text format and in OpenMetrics, each
    /// rendered by the first scrape that asks for it and shared by the rest:
    /// however many scrapes, one rendering per format per refresh.
    pages: [OnceLock<Body>; 2],
}

impl Current {
    fn page(&self, openmetrics: bool) -> Body {
        self.pages[usize::from(openmetrics)]
            .get_or_init(|| metrics::render(&self.snapshot, openmetrics).into())
            .clone()
    }
}

/// Serves the last snapshot.
pub struct Published {
    /// `POST /dump` asked for a recorder dump; at most one waits (a
    /// permit), however many clients ask.
    dump_requests: tokio::sync::Notify,
    /// Whether the agent has a flight recorder to dump.
    recorder: std::sync::atomic::AtomicBool,
    current: Mutex<Option<Arc<Current>>>,
    interval: Duration,
    /// The probes attached, for `/health`: set once they are.
    probes: OnceLock<String>,
}

impl Published {
    /// Considered stuck when no refresh succeeded for this many intervals.
    const STALE_AFTER: u32 = 3;

    pub fn new(interval: Duration) -> Self {
        Self {
            dump_requests: tokio::sync::Notify::new(),
            recorder: std::sync::atomic::AtomicBool::new(false),
            current: Mutex::new(None),
            interval,
            probes: OnceLock::new(),
        }
    }

    /// Replaces the snapshot scrapes are served from.
    pub fn publish(&self, snapshot: Snapshot) {
        let current = Current {
            snapshot,
            at: Instant::now(),
            pages: Default::default(),
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(current));
    }

    /// Says the agent has a flight recorder, which `POST /dump` dumps.
    pub fn set_recorder(&self) {
        self.recorder
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits for a `POST /dump`.
    pub async fn dump_requested(&self) {
        self.dump_requests.notified().await
    }

    /// Names the probes attached, once they are.
    pub fn set_probes(&self, probes: String) {
        let _ = self.probes.set(probes);
    }

    fn last(&self) -> Option<Arc<Current>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl http::Handler for Published {
    fn post(&self, path: &str) -> Response {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            "/dump" if self.recorder.load(std::sync::atomic::Ordering::Relaxed) => {
                self.dump_requests.notify_one();
                Response::new(
                    202,
                    TEXT,
                    "a recorder dump is being written to the dump directory\n",
                )
            }
            "/dump" => Response::new(409, TEXT, "no [recorder] is configured: nothing to dump\n"),
            _ => Response::new(404, TEXT, "not found\n"),
        }
    }

    fn handle(&self, path: &str, accept: &str) -> Response {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            "/metrics" => match self.last() {
                Some(current) => {
                    let openmetrics = accept.contains("application/openmetrics-text");
                    Response::new(
                        200,
                        metrics::content_type(openmetrics),
                        current.page(openmetrics),
                    )
                }
                None => Response::new(
                    503,
                    TEXT,
                    "no data yet: the first read of the maps is pending\n",
                ),
            },
            "/health" => {
                let (status, age) = match self.last() {
                    None => ("starting", None),
                    Some(c) if c.at.elapsed() > self.interval * Self::STALE_AFTER => {
                        ("stale", Some(c.at.elapsed()))
                    }
                    Some(c) => ("ok", Some(c.at.elapsed())),
                };
                let body = serde_json::json!({
                    "status": status,
                    "seconds_since_refresh": age.map(|a| a.as_secs_f64()),
                    "interval_seconds": self.interval.as_secs_f64(),
                    "probes": self.probes.get(),
                });
                Response::new(
                    if status == "ok" { 200 } else { 503 },
                    "application/json",
                    format!("{body}\n"),
                )
            }
            "/" => Response::new(
                200,
                TEXT,
                "tracer agent: /metrics (Prometheus text or OpenMetrics), /health\n",
            ),
            _ => Response::new(404, TEXT, "not found: try /metrics or /health\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Handler as _;

    use super::*;

    #[test]
    fn every_scrape_of_a_snapshot_sends_the_same_rendering() {
        let published = Published::new(Duration::from_secs(5));
        assert_eq!(published.handle("/metrics", "").status, 503);
        published.publish(Snapshot::default());
        let text = published.handle("/metrics", "");
        let again = published.handle("/metrics", "*/*");
        assert!(
            Arc::ptr_eq(&text.body, &again.body),
            "two scrapes of one snapshot rendered it twice"
        );
        let openmetrics = published.handle("/metrics", "application/openmetrics-text");
        assert!(openmetrics.body.ends_with("# EOF\n"));
        assert!(!text.body.ends_with("# EOF\n"));

        published.publish(Snapshot {
            evicted_cgroups: 7,
            ..Snapshot::default()
        });
        let next = published.handle("/metrics", "");
        assert!(
            next.body.contains("tracer_cgroups_evicted_total 7"),
            "{}",
            next.body
        );
        assert!(!text.body.contains("tracer_cgroups_evicted_total 7"));
    }

    #[test]
    fn health_follows_the_refreshes() {
        let published = Published::new(Duration::from_secs(5));
        published.set_probes("sched_switch".into());
        let health = published.handle("/health", "");
        assert_eq!(health.status, 503);
        assert!(health.body.contains("\"starting\""));
        published.publish(Snapshot::default());
        let health = published.handle("/health", "");
        assert_eq!(health.status, 200, "{}", health.body);
        assert!(health.body.contains("\"probes\":\"sched_switch\""));
        assert_eq!(published.handle("/nowhere", "").status, 404);
    }

    #[tokio::test]
    async fn a_post_asks_for_a_recorder_dump_once_however_often_it_comes() {
        use http::Handler as _;
        let published = Published::new(Duration::from_secs(1));
        assert_eq!(published.post("/dump").status, 409, "no recorder");
        assert_eq!(published.post("/other").status, 404);
        published.set_recorder();
        for _ in 0..3 {
            assert_eq!(published.post("/dump").status, 202);
        }
        // One request waits, however many came.
        published.dump_requested().await;
        let again =
            tokio::time::timeout(Duration::from_millis(50), published.dump_requested()).await;
        assert!(again.is_err(), "a second dump asked for by the same burst");
    }
}
