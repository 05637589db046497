//! ws-bridge's stats source, implemented with the services.

use services::Services;
use ws_bridge::{StatsError, StatsSource, StatsTopic, StatsValue};

/// Reads each topic's stats through the services (one query per topic).
pub struct ServicesStats(pub Services);

impl StatsSource for ServicesStats {
    async fn stats(&self, topic: StatsTopic) -> Result<StatsValue, StatsError> {
        let s = &self.0;
        let value = match topic {
            StatsTopic::Tasks => s.tasks.stats().await.map(StatsValue::Tasks),
            StatsTopic::Approvals => s.approvals.stats().await.map(StatsValue::Approvals),
            StatsTopic::Conversations => s.conversations.stats().await.map(StatsValue::Conversations),
        };
        value.map_err(|e| StatsError(e.to_string()))
    }
}
