//! Stream authentication: who an ADS stream is ([`StreamIdentity`], from the
//! `authorization` metadata through a [`StreamAuthenticator`]), and the index of live
//! streams by token id that [`XdsServer::close_streams_for_token`](crate::XdsServer::close_streams_for_token)
//! uses to end the streams of a revoked token.
//!
//! The server knows nothing of how tokens are minted or verified: the runtime supplies the
//! authenticator. What the server guarantees once one is set:
//! - a stream without a valid identity ends with `UNAUTHENTICATED` before any request is read;
//! - a request whose `node.id` differs from the identity's node (first or later) ends the
//!   stream with `PERMISSION_DENIED`, so nothing of another node is ever sent;
//! - a stream ends (`UNAUTHENTICATED`) when its identity expires or its token is revoked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Verifies the credential an ADS stream presents.
pub trait StreamAuthenticator: Send + Sync + 'static {
    /// `authorization` is the raw metadata value (e.g. "Bearer mpt1…"), None when absent.
    fn authenticate(&self, authorization: Option<&str>) -> Result<StreamIdentity, tonic::Status>;
}

/// Who a stream is: the only node it may ask for, the token it presented and when that
/// token stops being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamIdentity {
    /// The node the token is bound to, in Envoy's `node.id` form (`mesh/<m>/virtualNode/<n>`).
    pub node: String,
    /// The token's id (shown in proxy status, used to revoke).
    pub token_id: String,
    /// When the stream is ended because its token expired.
    pub expires_at: SystemTime,
}

/// Live streams by token id; each holds a [`TokenStream`] that removes it on drop.
#[derive(Default)]
pub(crate) struct TokenIndex {
    streams: Mutex<StreamsByToken>,
}

/// Token id -> stream id -> the stream's revocation signal.
type StreamsByToken = HashMap<Arc<str>, HashMap<u64, Arc<Notify>>>;

/// A stream's authenticated state: its identity, its revocation signal and its place in the
/// [`TokenIndex`].
pub(crate) struct StreamAuth {
    pub(crate) identity: StreamIdentity,
    pub(crate) token_id: Arc<str>,
    /// When the token expires, on tokio's clock.
    pub(crate) deadline: Instant,
    revoked: Arc<Notify>,
    index: Arc<TokenIndex>,
    stream: u64,
}

/// Why a stream task must stop serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    Shutdown,
    Revoked,
    Expired,
}

// === impl TokenIndex ===

impl TokenIndex {
    /// Registers stream `stream` of `identity`; it leaves the index when the result drops.
    pub(crate) fn enter(
        self: &Arc<Self>,
        stream: u64,
        identity: StreamIdentity,
    ) -> Option<StreamAuth> {
        let left = identity
            .expires_at
            .duration_since(SystemTime::now())
            .ok()
            .filter(|d| !d.is_zero())?;
        let token_id: Arc<str> = identity.token_id.as_str().into();
        let revoked = Arc::new(Notify::new());
        self.lock()
            .entry(token_id.clone())
            .or_default()
            .insert(stream, revoked.clone());
        Some(StreamAuth {
            identity,
            token_id,
            deadline: Instant::now() + left,
            revoked,
            index: self.clone(),
            stream,
        })
    }

    /// Signals every live stream of `token_id` to end; returns how many there were.
    pub(crate) fn revoke(&self, token_id: &str) -> usize {
        let streams = self.lock();
        let Some(of_token) = streams.get(token_id) else {
            return 0;
        };
        for notify in of_token.values() {
            // `notify_one` keeps a permit when the task is not waiting yet: no lost signal.
            notify.notify_one();
        }
        of_token.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamsByToken> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl StreamAuth ===

impl StreamAuth {
    /// `Err(PERMISSION_DENIED)` when a request names a node other than the identity's.
    pub(crate) fn check_node(&self, node_id: &str) -> Result<(), tonic::Status> {
        if node_id == self.identity.node {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(
                "the stream's token is not valid for the requested node",
            ))
        }
    }

    /// Resolves when the token is revoked or expires.
    pub(crate) async fn ended(&self) -> Interrupt {
        tokio::select! {
            () = self.revoked.notified() => Interrupt::Revoked,
            () = tokio::time::sleep_until(self.deadline) => Interrupt::Expired,
        }
    }
}

impl Drop for StreamAuth {
    fn drop(&mut self) {
        let mut streams = self.index.lock();
        if let Some(of_token) = streams.get_mut(&self.token_id) {
            of_token.remove(&self.stream);
            if of_token.is_empty() {
                streams.remove(&self.token_id);
            }
        }
    }
}

// === impl Interrupt ===

impl Interrupt {
    /// The status the proxy is told, if any (shutdown ends streams cleanly).
    pub(crate) fn status(self) -> Option<tonic::Status> {
        match self {
            Interrupt::Shutdown => None,
            Interrupt::Revoked => Some(tonic::Status::unauthenticated("node token revoked")),
            Interrupt::Expired => Some(tonic::Status::unauthenticated("node token expired")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn identity(token: &str, ttl: Duration) -> StreamIdentity {
        StreamIdentity {
            node: "mesh/m/virtualNode/a".into(),
            token_id: token.into(),
            expires_at: SystemTime::now() + ttl,
        }
    }

    #[tokio::test]
    async fn revoke_counts_and_signals_only_live_streams_of_the_token() {
        let index = Arc::new(TokenIndex::default());
        let a1 = index
            .enter(1, identity("t1", Duration::from_secs(60)))
            .unwrap();
        let a2 = index
            .enter(2, identity("t1", Duration::from_secs(60)))
            .unwrap();
        let b = index
            .enter(3, identity("t2", Duration::from_secs(60)))
            .unwrap();
        drop(a2);
        assert_eq!(index.revoke("t1"), 1);
        assert_eq!(index.revoke("nope"), 0);
        assert_eq!(a1.ended().await, Interrupt::Revoked);
        let quiet = tokio::time::timeout(Duration::from_millis(50), b.ended()).await;
        assert!(quiet.is_err(), "t2's stream must not be signalled");
        drop((a1, b));
        assert!(index.lock().is_empty());
    }

    #[tokio::test]
    async fn expired_identity_is_refused_and_expiry_ends_a_stream() {
        let index = Arc::new(TokenIndex::default());
        let mut past = identity("t", Duration::ZERO);
        past.expires_at = SystemTime::now() - Duration::from_secs(1);
        assert!(index.enter(1, past).is_none());
        let short = index
            .enter(2, identity("t", Duration::from_millis(50)))
            .unwrap();
        assert_eq!(short.ended().await, Interrupt::Expired);
    }

    #[test]
    fn other_node_is_permission_denied() {
        let index = Arc::new(TokenIndex::default());
        let a = index
            .enter(1, identity("t", Duration::from_secs(9)))
            .unwrap();
        assert!(a.check_node("mesh/m/virtualNode/a").is_ok());
        let err = a.check_node("mesh/m/virtualNode/b").unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    }
}
