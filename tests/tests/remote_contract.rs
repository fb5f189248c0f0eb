//! The contract panfs relies on, run against a real panserver through panfs's
//! HTTP remote. panfs's unit tests run the same suite against its in-memory
//! remote, so what they show about the file-system logic holds here too.

use std::time::Duration;

use panfs::remote::{HttpRemote, Remote};
use pantests::{Api, PASSWORD, Server};

#[test]
fn the_http_remote_keeps_the_contract() {
    let server = Server::start();
    let api = Api::user(&server.url(), "contract", PASSWORD);
    let token = api.token.clone().expect("a token");
    let remote = HttpRemote::new(&server.url(), &token, Duration::from_secs(30)).expect("client");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let root = remote.user_info().await.expect("user").root_ino;
        panfs::remote::contract::run(&remote, root).await;
    });
}
