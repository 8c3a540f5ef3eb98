//! Dead letters in the console (part of `ui.rs`): an undecodable record on a
//! type's events topic shows on the type's page with its reason, its decoded
//! form on request, and the *Redrive* button (after its confirmation) sends it
//! back once — the row and the API then say it was redriven.

use std::time::Duration;

use anyhow::{ensure, Result};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use weft_integration_tests::{wait_for, ApiClient};

use crate::browser::Browser;
use crate::{POLL, T};

pub async fn redrive(
    b: &Browser,
    api: &ApiClient,
    base: &str,
    bootstrap: &str,
    key: &str,
) -> Result<()> {
    let producer: FutureProducer =
        weft_integration_tests::broker::client_config(bootstrap).create()?;
    producer
        .send(
            FutureRecord::to("weft.uishop.events")
                .key(key)
                .payload(b"not an event at all".as_slice()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let item = wait_for("the record is dead-lettered", T, POLL, || async {
        let r = api
            .send(reqwest::Method::GET, "/v1/dlq/uishop", None)
            .await?;
        let found = r.body["items"].as_array().into_iter().flatten().find(|i| {
            i["reason"]
                .as_str()
                .is_some_and(|s| s.contains("undecodable"))
                && i["redrive"]["state"] == "none"
        });
        anyhow::Ok(found.cloned())
    })
    .await?;
    let at = format!("{}/{}", item["partition"], item["offset"]);
    b.goto(&format!("{base}/ui#/types/uishop")).await?;
    let row = format!("#dlq tr[data-dlq='{at}']");
    b.wait_eval("the dead letter is listed", T, &format!("const r = document.querySelector(\"{row}\"); return r && r.textContent.includes('undecodable') && r.dataset.redrive === 'none'")).await?;
    b.click(&format!("{row} .dlq-show")).await?;
    b.wait_eval("its decoded form", T, "return (document.getElementById('dlq-detail').textContent || '').includes('\"undecodable\"')").await?;
    b.screenshot("dead-letters").await?;
    b.click(&format!("{row} .dlq-redrive")).await?;
    b.wait_eval(
        "the confirmation is open",
        T,
        "return document.getElementById('confirm').open",
    )
    .await?;
    b.click("#confirm-yes").await?;
    b.wait_eval(
        "the row says redriven",
        T,
        &format!("return document.querySelector(\"{row}\")?.dataset.redrive === 'done'"),
    )
    .await?;
    let r = api
        .send(reqwest::Method::GET, "/v1/dlq/uishop", None)
        .await?;
    let done = r.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["id"] == item["id"] && i["redrive"]["state"] == "done");
    ensure!(done, "the API does not say {at} was redriven: {}", r.body);
    ensure!(
        b.eval(
            &format!("return !document.querySelector(\"{row} .dlq-redrive\")"),
            json!([])
        )
        .await?
            == true,
        "a redriven record still offers a redrive"
    );
    Ok(())
}
