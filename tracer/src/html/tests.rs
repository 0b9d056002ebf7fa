use super::*;
use crate::dump;

fn page() -> (Recording, String) {
    let rec = dump::parse(include_bytes!("../../tests/fixtures/record-v0.json")).unwrap();
    let html = render(&rec, 10);
    (rec, html)
}

#[test]
fn self_contained() {
    let (_, html) = page();
    assert!(html.starts_with("<!doctype html>"));
    for external in ["http://", "https://", "<script", "<link", "src="] {
        assert!(!html.contains(external), "{external} in the page");
    }
}

#[test]
fn shows_every_cgroup_with_its_verdict_and_shares() {
    let (rec, html) = page();
    for c in &rec.cgroups {
        assert!(html.contains(&format!("data-path=\"{}\"", escape(&c.path))));
        assert!(
            html.contains(&escape(&c.verdict.text)),
            "{}",
            c.verdict.text
        );
    }
    let svc = rec.cgroups.iter().find(|c| c.path == "/svc").unwrap();
    let throttled = svc.wait.causes.throttled_ns as f64 * 100.0 / rec.duration_ns as f64;
    assert!(html.contains(&format!(
        "class=\"throttled\" data-share=\"{throttled:.1}\""
    )));
}

#[test]
fn escapes() {
    assert_eq!(
        escape("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}

#[test]
fn bars_scale_past_100_percent() {
    let svg = stacked_bar([150.0, 50.0, 0.0, 0.0], 200.0);
    // 200 % in all: the running part takes three quarters, a mark at 100 %.
    assert!(
        svg.contains("class=\"running\" data-share=\"150.0\" x=\"0.00\" y=\"0\" width=\"150.00\""),
        "{svg}"
    );
    assert!(svg.contains("<line x1=\"100.00\""), "{svg}");
}
