//! A stored record is read only as the type its name says: a request that names a patient where a
//! unit is expected finds no unit (the fuzz test found a Program Manager's `parent_unit` naming a
//! patient decoded the patient's bytes as a unit).

mod common;

use common::Harness;
use pm_api::org::{Patient, ServiceUnit};
use pm_runtime::docstore;

pm_testing::on_both_backends!(
    crate::common::Harness;
    a_record_is_never_decoded_as_another_type,
);

async fn a_record_is_never_decoded_as_another_type(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let patient = h.patient("organizations/acme", "p-1", "MRN-1").await?.name;
    let mut conn = h.db().read().await?;
    assert!(
        docstore::get::<Patient>(&mut conn, &patient)
            .await?
            .is_some()
    );
    assert!(
        docstore::get::<ServiceUnit>(&mut conn, &patient)
            .await?
            .is_none()
    );
    assert!(
        docstore::get_live::<ServiceUnit>(&mut conn, &patient)
            .await?
            .is_none()
    );
    let rows = docstore::read_live(&mut conn, std::slice::from_ref(&patient), &[]).await?;
    assert!(rows.named::<Patient>(&patient)?.is_some());
    assert!(rows.named::<ServiceUnit>(&patient)?.is_none());
    assert!(rows.all::<ServiceUnit>()?.is_empty());
    Ok(())
}
