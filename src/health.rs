//! The node's `grpc.health.v1.Health` statuses: each service a role adds is
//! `SERVING` once it is ready, and every service (and the overall `""`)
//! turns `NOT_SERVING` the moment the node starts to drain, before it
//! stops accepting work, so load balancers and health-watching clients move
//! away while in-flight work still finishes.

use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The health reporter and the services it reports on.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl Health {
    pub fn new(reporter: HealthReporter) -> Health {
        Health {
            reporter,
            services: Vec::new(),
        }
    }

    /// Service `S` is ready.
    pub async fn serving<S: NamedService>(&mut self) {
        self.services.push(S::NAME);
        self.reporter.set_serving::<S>().await;
    }

    /// The node drains: every service and the node itself are not serving.
    pub async fn draining(&self) {
        for name in self.services.iter().copied().chain([""]) {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }
}
