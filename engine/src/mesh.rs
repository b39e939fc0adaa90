//! The shard mesh as a transport: bounded channels between every pair of shards, and
//! nothing else. It knows no message type (the shard defines its own, `shard::ShardMsg`)
//! and never waits: a full or closed channel gives the message back to the caller, who
//! treats it as a miss.

use glommio::channels::channel_mesh::Senders;
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::{GlommioError, ResourceType};

/// This shard's sending ends (none when it runs alone).
pub struct Mesh<M: Send> {
    id: usize,
    n: usize,
    senders: Option<Senders<M>>,
}

impl<M: Send> Mesh<M> {
    pub fn new(id: usize, n: usize, senders: Option<Senders<M>>) -> Self {
        Mesh { id, n, senders }
    }

    /// Sends without waiting. `Err(Some(msg))`: the channel was full or closed and the
    /// message comes back; `Err(None)`: there is no such peer (the message is gone).
    pub fn try_send(&self, to: usize, msg: M) -> Result<(), Option<M>> {
        let Some(s) = &self.senders else {
            return Err(Some(msg));
        };
        s.try_send_to(to, msg).map_err(|e| match e {
            GlommioError::Closed(ResourceType::Channel(m))
            | GlommioError::WouldBlock(ResourceType::Channel(m)) => Some(m),
            _ => None,
        })
    }

    /// Every other shard.
    pub fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n).filter(move |&p| p != self.id && self.senders.is_some())
    }

    /// Closes this shard's sending ends (the peers' receive loops then end).
    pub fn close(&self) {
        if let Some(s) = &self.senders {
            s.close();
        }
    }
}

/// Hands every message from one peer to `handle`, until that peer closes its end.
pub async fn receive<M: Send>(rx: ConnectedReceiver<M>, mut handle: impl FnMut(M)) {
    while let Some(msg) = rx.recv().await {
        handle(msg);
    }
}
