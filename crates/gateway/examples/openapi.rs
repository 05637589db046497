//! Prints the OpenAPI document of the REST API — what `GET /api/v1/openapi.json` serves —
//! without a server or a database. The dashboard's REST types are generated from it:
//!
//! ```text
//! cargo run -q -p gateway --example openapi > target/openapi.json
//! cargo xtask api-types     # regenerates apps/dashboard/src/lib/openapi.gen.ts, fails on drift
//! ```

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json = gateway::openapi_document().to_pretty_json()?;
    let mut out = std::io::stdout().lock();
    out.write_all(json.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}
