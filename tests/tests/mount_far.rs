//! A mount whose server is far away: `pan-latency-proxy` adds a round trip of
//! 20 ms to every request, as a real drive's server does. What a user does on
//! that mount arrives whole, as another mount on loopback sees it.

use std::time::Duration;

use pantests::tree::tree;
use pantests::{LatencyProxy, Mount, Noise, Server};

#[test]
fn work_on_a_mount_far_from_its_server_arrives_whole() {
    let server = Server::start();
    let proxy = LatencyProxy::start(&server, Duration::from_millis(20));
    let far = Mount::at(&proxy.url(), "far", &[]);
    let near = Mount::new(&server, "far");
    let src = tempfile::tempdir_in("/var/tmp").expect("dir");
    for d in 0..3 {
        let dir = src.path().join(format!("d{d}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..5u64 {
            let len = (Noise::bytes(d * 10 + f, 8)[0] as usize) * 97;
            std::fs::write(dir.join(format!("f{f}")), Noise::bytes(d * 10 + f, len))
                .expect("write");
        }
    }
    // Chunked: over the size that goes up in one request.
    std::fs::write(src.path().join("big.bin"), Noise::bytes(99, 3 << 20)).expect("write");
    far.sh(&format!(
        "cp -r {}/. . && mv d0/f0 d1/moved && rm d2/f4 && ln -s d1/moved link && sync",
        src.path().display()
    ));
    let expected = {
        let copy = tempfile::tempdir_in("/var/tmp").expect("dir");
        let script = format!(
            "cp -r {}/. . && mv d0/f0 d1/moved && rm d2/f4 && ln -s d1/moved link",
            src.path().display()
        );
        let status = std::process::Command::new("bash")
            .args(["-c", &script])
            .current_dir(copy.path())
            .status()
            .expect("bash");
        assert!(status.success());
        tree(copy.path())
    };
    assert_eq!(tree(far.root()), expected, "the far mount itself");
    // The other mount hears of the changes through the feed, a moment later.
    let start = std::time::Instant::now();
    while tree(near.root()) != expected && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tree(near.root()), expected, "another mount, on loopback");
}
