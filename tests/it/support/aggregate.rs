//! A server set up for aggregate mode (NATS-NOTES.md): tenant accounts that export their
//! JetStream consumer API, flow control and delivery subjects, and a central account importing
//! them, so the central account can source every tenant's stream.

use crate::support::nats::{AccountSpec, Export, Import, LocalNatsServer, operator_server};

pub async fn aggregate_server(tenants: &[&str], central: &str) -> LocalNatsServer {
    let server = operator_server(&[]).await;
    let mut central_spec = AccountSpec::new(central);
    for tenant in tenants {
        let spec = AccountSpec::new(*tenant)
            .with_export(Export::service("$JS.API.CONSUMER.>"))
            .with_export(Export::service("$JS.FC.>"))
            .with_export(Export::stream(format!("deliver.{tenant}.>")));
        let account = server.add_account(spec).await.unwrap();
        let key = account.public_key();
        central_spec = central_spec
            .with_import(
                Import::service(&key, "$JS.API.CONSUMER.>")
                    .with_local_subject(format!("JS.{tenant}.API.CONSUMER.>")),
            )
            .with_import(Import::service(&key, "$JS.FC.>"))
            .with_import(Import::stream(&key, format!("deliver.{tenant}.>")));
    }
    server.add_account(central_spec).await.unwrap();
    server
}
