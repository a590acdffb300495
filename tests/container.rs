//! The container image, run the way the image runs it (there is no container engine here): the
//! binary as UID 10001 with the image's environment and config directory, working directory `/`,
//! and the data volume mounted at `/var/lib/natter` (a private mount namespace, so nothing of the
//! machine changes). Only the port is moved off 8080, as `docker run -e` would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

const IMAGE_UID: u32 = 10001;

#[test]
fn the_images_config_binds_every_interface_and_keeps_data_in_the_volume() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let figment_env = [("NATTER_ENV", "container")];
    let config = temp_env(&figment_env, || natter::config::Config::load(&dir, &Default::default())).unwrap();
    assert_eq!(config.http.bind, "0.0.0.0:8080");
    assert_eq!(config.http.admin_bind, "0.0.0.0:9090");
    assert_eq!(config.database.url.expose(), "sqlite:///var/lib/natter/natter.db");
}

fn temp_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
    for (k, v) in vars {
        // SAFETY: no other thread of this test binary reads the environment meanwhile.
        unsafe { std::env::set_var(k, v) };
    }
    let out = f();
    for (k, _) in vars {
        unsafe { std::env::remove_var(k) };
    }
    out
}

/// The image's file system: the binary and config where the Dockerfile puts them, and a volume
/// directory owned by the image's user.
struct Image {
    root: tempfile::TempDir,
}

impl Image {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = root.path().join("natter");
        std::fs::copy(env!("CARGO_BIN_EXE_natter"), &bin).unwrap();
        let config = root.path().join("config");
        std::fs::create_dir(&config).unwrap();
        for file in ["default.toml", "container.toml"] {
            std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(file), config.join(file)).unwrap();
        }
        let volume = root.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        std::os::unix::fs::chown(&volume, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
        Image { root }
    }

    fn volume(&self) -> std::path::PathBuf {
        self.root.path().join("volume")
    }

    /// `natter --config-dir … ARGS` as the image's user, with `/var/lib/natter` being the volume.
    fn command(&self, port: u16, args: &str) -> Command {
        let root = self.root.path().display();
        let script = format!(
            "mount -t tmpfs none /var/lib && mkdir /var/lib/natter && mount --bind {root}/volume /var/lib/natter \
             && cd / && exec setpriv --reuid {IMAGE_UID} --regid {IMAGE_UID} --clear-groups \
             {root}/natter --config-dir {root}/config {args}"
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", &script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NATTER_ENV", "container")
            .env("NATTER_HTTP__BIND", format!("0.0.0.0:{port}"))
            .env("NATTER_HTTP__ADMIN_BIND", "127.0.0.1:0")
            .env("NATTER_LOG__LEVEL", "warn");
        cmd
    }

    fn serve(&self, port: u16) -> Child {
        self.command(port, "serve").stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap()
    }

    fn healthcheck(&self, port: u16) -> bool {
        self.command(port, "healthcheck").stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_healthy(image: &Image, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !image.healthcheck(port) {
        assert!(Instant::now() < deadline, "natter healthcheck never passed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_uid_10001_from_slash_with_its_data_in_the_volume_and_a_healthcheck() {
    let image = Image::new();
    let port = free_port();
    assert!(!image.healthcheck(port), "healthcheck passes with nothing listening");
    let node = image.serve(port);
    wait_healthy(&image, port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let body = json!({"email": "ada@example.com", "password": "correct horse", "first_name": "Ada", "last_name": "L"});
    let (status, ada) = common::post_to(addr, "/v1/auth/register", None, body).await;
    assert_eq!(status, 201, "{ada}");
    let body = json!({"email": "bob@example.com", "password": "battery staple", "first_name": "Bob", "last_name": "B"});
    let (status, bob) = common::post_to(addr, "/v1/auth/register", None, body).await;
    assert_eq!(status, 201, "{bob}");
    let token = ada["data"]["access_token"].as_str().unwrap().to_string();
    let mut ws = common::Ws::connect(&format!("ws://{addr}/ws"), Some(&token)).await;
    let reply = ws.send_dm(bob["data"]["user"]["id"].as_str().unwrap(), "kept in the volume", "c1").await;
    assert_eq!(reply["code"], 201, "{reply}");
    drop(ws);
    stop(node);

    let db = image.volume().join("natter.db");
    let meta = std::fs::metadata(&db).expect("the database lives in the volume");
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(meta.uid(), IMAGE_UID, "written by the image's user");

    // A new container on the same volume has the history.
    let node = image.serve(port);
    wait_healthy(&image, port);
    let (status, login) =
        common::post_to(addr, "/v1/auth/login", None, json!({"email": "ada@example.com", "password": "correct horse"}))
            .await;
    assert_eq!(status, 200, "{login}");
    let token = login["data"]["access_token"].as_str().unwrap();
    let (status, convs) = common::get_from(addr, "/v1/conversations", Some(token)).await;
    assert_eq!(status, 200);
    let conv = convs["data"][0]["id"].as_str().unwrap().to_string();
    let (_, history) = common::get_from(addr, &format!("/v1/conversations/{conv}/messages"), Some(token)).await;
    assert_eq!(history["data"]["messages"][0]["content"], "kept in the volume");
    stop(node);
}
