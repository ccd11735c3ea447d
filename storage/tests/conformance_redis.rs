//! The conformance suite against the Redis store, each test on its own throwaway redis-server.

use storage::redis::RedisStore;
use storage::testing::RedisServer;

async fn fresh() -> (RedisStore, RedisServer) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.expect("connect to the test server");
    (store, server)
}

storage::conformance_tests!(fresh);
