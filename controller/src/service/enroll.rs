//! The enrollment service: served alone on the enrollment listener (no client certificate),
//! rate-limited per client address; everything it decides is `crate::fleet`'s.

use tonic::{Request, Response, Status};
use wardgate_proto::v1::{EnrollRequest, EnrollResponse, enroll_service_server::EnrollService};

use super::Ctx;

pub struct Enroll(pub Ctx);

#[tonic::async_trait]
impl EnrollService for Enroll {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        let r = req.into_inner();
        let (issued, ca) = self
            .0
            .fleet
            .enroll(&self.0, peer, &r.gateway, &r.token, &r.csr_pem)?;
        Ok(Response::new(EnrollResponse {
            certificate_chain_pem: issued.chain_pem,
            ca_pem: ca.root_pem().to_string(),
            not_after_unix: issued.not_after.unix_timestamp(),
        }))
    }
}
