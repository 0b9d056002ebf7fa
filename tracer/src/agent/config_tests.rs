use super::*;

#[test]
fn defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.dumps, Some(Dumps::default()));
    assert!(
        Config::parse("[dumps]\nenabled = false")
            .unwrap()
            .dumps
            .is_none()
    );
}

#[test]
fn a_full_file() {
    let c = Config::parse(
        r#"
        listen = "0.0.0.0:9000"
        interval = "2s"
        web_config = "/etc/tracer/web.yml"
        export_limit = 50
        include = ["/kubepods", "namespace:shop"]
        exclude = ["/kubepods/besteffort", "pod:shop/canary", "container:istio-proxy"]
        pods_log_dir = "/host/var/log/pods"
        labels = ["namespace", "pod", "container"]
        top_occupants = 5
        program_stats = false
        [dumps]
        dir = "/var/lib/tracer"
        every = "5m"
        keep = 3
        "#,
    )
    .unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.interval, Duration::from_secs(2));
    assert_eq!(c.web_config, Some(PathBuf::from("/etc/tracer/web.yml")));
    assert_eq!(
        (c.export_limit, c.top_occupants, c.program_stats),
        (50, 5, false)
    );
    assert_eq!(
        c.filter.include,
        [
            Selector::Path("/kubepods".into()),
            Selector::Namespace("shop".into())
        ]
    );
    assert_eq!(
        c.filter.exclude[1..],
        [
            Selector::Pod("shop".into(), "canary".into()),
            Selector::Container("istio-proxy".into())
        ]
    );
    assert_eq!(c.pods_log_dir, PathBuf::from("/host/var/log/pods"));
    assert_eq!(c.labels, ["namespace", "pod", "container"]);
    let d = c.dumps.unwrap();
    assert_eq!((d.every, d.keep), (Duration::from_secs(300), 3));
}

#[test]
fn a_recorder_with_triggers() {
    let c = Config::parse(
        r#"
        [recorder]
        minutes = 2
        after = "10s"
        [[recorder.trigger]]
        on = "throttled"
        above = 0.5
        for = "5s"
        include = ["/kubepods"]
        [[recorder.trigger]]
        on = "p99"
        above = "20ms"
        for = "3s"
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    let r = c.recorder.unwrap();
    assert_eq!(
        (r.span, r.resolution, r.after),
        (
            Duration::from_secs(120),
            Duration::from_secs(1),
            Duration::from_secs(10)
        )
    );
    assert_eq!(r.triggers.len(), 2);
    assert_eq!(r.triggers[0].describe(), "throttled above 50 % for 5.00 s");
    assert!(r.triggers[0].cgroups.allows_path("/kubepods/pod1"));
    assert!(!r.triggers[0].cgroups.allows_path("/system.slice"));
    assert_eq!(r.triggers[1].above, 20_000_000.0);
    assert!(r.triggers[1].cgroups.allows_path("/anything"));
    assert_eq!(
        Config::parse("[recorder]").unwrap().recorder,
        Some(Recorder::default())
    );
    assert!(
        Config::parse("").unwrap().recorder.is_none(),
        "off unless asked for"
    );
}

#[test]
fn recorder_mistakes_are_named() {
    let err = |t: &str| format!("{:#}", Config::parse(t).unwrap_err());
    let trigger = |on: &str, above: &str| {
        format!("[recorder]\n[[recorder.trigger]]\non = \"{on}\"\nabove = {above}\nfor = \"1s\"")
    };
    assert!(err(&trigger("p99", "0.5")).contains("p99 is a duration"));
    assert!(err(&trigger("throttled", "\"5ms\"")).contains("is a share"));
    assert!(err(&trigger("throttled", "-1.0")).contains("is a share"));
    assert!(err(&trigger("hot", "0.5")).contains("unknown variant"));
    assert!(err("[recorder]\nminutes = 0").contains("recorder.minutes"));
    let invalid = |t: &str| format!("{:#}", Config::parse(t).unwrap().validate().unwrap_err());
    assert!(invalid("[recorder]\nresolution = \"1ms\"").contains("too short"));
    assert!(invalid("[recorder]\n[dumps]\nenabled = false").contains("writes dumps"));
}

#[test]
fn mistakes_are_named() {
    let err = |t: &str| format!("{:#}", Config::parse(t).unwrap_err());
    assert!(err("listen = \"nowhere\"").contains("listen"));
    assert!(err("interval = \"soon\"").contains("interval"));
    assert!(err("include = [\"kubepods\"]").contains("starting with /"));
    assert!(err("labels = [\"node\"]").contains("not one of namespace, pod"));
    assert!(
        err("colour = \"blue\"").contains("colour"),
        "unknown keys are refused"
    );
    assert!(err("[dumps]\nkeep = 0").contains("keep at least 1"));
    let invalid = |t: &str| format!("{:#}", Config::parse(t).unwrap().validate().unwrap_err());
    assert!(invalid("interval = \"1ms\"").contains("too short"));
    assert!(invalid("[dumps]\nevery = \"10ms\"").contains("dumps.every"));
    assert!(err("[dumps]\nevery = \"0.0000000001s\"").contains("under a nanosecond"));
}
