//! `gpumlp train --config run.toml`: a run described in one file, with the same keys as the
//! flags (`epochs = 2`, `layers = "64,32,10"`, `data = "digits"`, `val-split = 0.1`, ...).
//! A flag typed on the command line overrides the file.

use crate::train::TrainArgs;
use crate::LayerSizes;
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::Path;

/// Keys that live in the flattened device arguments.
const DEVICE_KEYS: &[&str] = &["device", "backend", "adapter", "threads"];
/// Keys a file may not set: they name this command's own run, not the run described.
const COMMAND_ONLY: &[&str] = &["config", "resume", "given", "quiet", "force"];

/// `args` with every key of the TOML file at `path` whose flag was not typed (`args.given`).
pub fn apply(args: TrainArgs, path: &Path) -> anyhow::Result<TrainArgs> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--config {}", path.display()))?;
    if text.len() > 1 << 20 {
        bail!(
            "--config {}: over the 1 MiB a run description may take",
            path.display()
        );
    }
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("--config {}: not valid TOML", path.display()))?;
    let mut given = args.given.clone();
    let mut from_file = Vec::new();
    let mut json = serde_json::to_value(&args)?;
    for (key, value) in table {
        let id = key.replace('-', "_");
        if COMMAND_ONLY.contains(&id.as_str()) {
            bail!(
                "--config {}: '{key}' cannot be set in a file: give it on the command line",
                path.display()
            );
        }
        if given.contains(&id) {
            continue; // the command line wins
        }
        from_file.push(id.clone());
        let value = to_json(&id, value)
            .with_context(|| format!("--config {}: key '{key}'", path.display()))?;
        let slot = if DEVICE_KEYS.contains(&id.as_str()) {
            json["device"].get_mut(id.as_str())
        } else {
            json.get_mut(id.as_str())
        };
        match slot {
            Some(slot) => *slot = value,
            None if DEVICE_KEYS.contains(&id.as_str()) => {
                json["device"][id.as_str()] = value;
            }
            None => bail!(
                "--config {}: unknown key '{key}': use the names of `gpumlp train`'s flags (see --help)",
                path.display()
            ),
        }
    }
    let mut merged: TrainArgs = serde_json::from_value(json)
        .with_context(|| format!("--config {}: a value has the wrong type", path.display()))?;
    // Keys set by the file count as given: `--resume` treats them as it treats typed flags.
    given.extend(from_file);
    merged.given = given;
    merged.config = args.config;
    merged.quiet = args.quiet;
    merged.force = args.force;
    Ok(merged)
}

/// A TOML value as the JSON the arguments deserialize from; layer lists may be written as
/// strings (`"64,32,10"`) or arrays.
fn to_json(id: &str, value: toml::Value) -> anyhow::Result<Value> {
    if let ("layers" | "hidden", toml::Value::String(s)) = (id, &value) {
        let sizes: LayerSizes = s.parse().map_err(anyhow::Error::msg)?;
        return Ok(serde_json::to_value(sizes)?);
    }
    if let ("max_device_memory", toml::Value::String(s)) = (id, &value) {
        // "64M" as on the command line.
        return Ok(Value::from(gpumlp::limits::parse_bytes(s)?));
    }
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|v| to_json("", v))
                .collect::<anyhow::Result<_>>()?,
        ),
        other => bail!("unsupported value {other}"),
    })
}

/// A saved run's arguments (the JSON a checkpoint stores) as the TOML `--config` reads, with
/// unset options left out.
pub fn to_toml(args_json: &str) -> anyhow::Result<String> {
    let mut value: Value = serde_json::from_str(args_json).context("unreadable run arguments")?;
    if let Some(device) = value
        .get_mut("device")
        .and_then(|d| d.as_object_mut())
        .cloned()
    {
        let top = value
            .as_object_mut()
            .context("run arguments are not an object")?;
        top.remove("device");
        top.extend(device);
    }
    let table: toml::Table = value
        .as_object()
        .context("run arguments are not an object")?
        .iter()
        .filter(|(k, v)| !v.is_null() && !COMMAND_ONLY.contains(&k.as_str()))
        .map(|(k, v)| {
            Ok((
                k.replace('_', "-"),
                serde_json::from_value::<toml::Value>(v.clone())?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(toml::to_string(&table)?)
}
