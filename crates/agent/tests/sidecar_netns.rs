//! The network-namespace harness removes everything it made: namespaces, veths, the bridge and
//! `/etc/netns/<ns>` hosts files, also when the test using it panics. Names resolve inside the
//! namespaces through their own hosts file, and hosts reach each other over the bridge.

use meshplane_agent::sidecar::netns::{self, Network};

fn require_root() {
    assert!(
        netns::available(),
        "network-namespace tests need root and iproute2 (apt-get install -y iproute2)"
    );
}

#[test]
fn hosts_reach_each_other_by_name_and_everything_is_removed() {
    require_root();
    let id;
    {
        let mut net = Network::new().unwrap();
        id = net.id().to_owned();
        let a = net.add_host("alpha").unwrap();
        let b = net.add_host("beta").unwrap();
        net.add_name("svc.example.local", b.ip).unwrap();
        assert!(a.netns.starts_with("mp-"));
        let hosts = std::fs::read_to_string(format!("/etc/netns/{}/hosts", a.netns)).unwrap();
        assert!(
            hosts.contains(&format!("{} svc.example.local", b.ip)),
            "{hosts}"
        );
        // Resolution uses the namespace's hosts file (bind-mounted by `ip netns exec`).
        let out = a.run("getent", &["ahostsv4", "svc.example.local"]).unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&b.ip.to_string()),
            "{out:?}"
        );
        // Hosts reach each other over the bridge: a TCP server in beta, a client in alpha.
        let mut server = b
            .command("python3")
            .args(["-m", "http.server", "18080", "--bind", &b.ip.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = "http://svc.example.local:18080/";
        let mut ok = false;
        for _ in 0..50 {
            let out = a
                .run(
                    "curl",
                    &["-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                )
                .unwrap();
            if String::from_utf8_lossy(&out.stdout) == "200" {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = server.kill();
        let _ = server.wait();
        assert!(ok, "alpha could not reach beta over the bridge");
        assert!(!netns::leftovers(&id).is_empty());
    }
    assert_eq!(netns::leftovers(&id), Vec::<String>::new());
}

#[test]
fn everything_is_removed_when_the_test_panics() {
    require_root();
    let id = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let mut net = Network::new().unwrap();
        *id.lock().unwrap() = net.id().to_owned();
        let h = net.add_host("doomed").unwrap();
        // A process still running inside is killed too (reaped by a thread, as a test
        // harness would not get to wait for it after a panic).
        let mut child = h.command("sleep").arg("60").spawn().unwrap();
        std::thread::spawn(move || child.wait());
        std::thread::sleep(std::time::Duration::from_millis(100));
        panic!("simulated test failure");
    });
    assert!(result.is_err());
    let id = id.into_inner().unwrap();
    assert!(!id.is_empty());
    assert_eq!(netns::leftovers(&id), Vec::<String>::new());
}
