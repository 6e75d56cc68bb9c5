//! The generic resource store and the standard methods built on it (AIP-131 to 135, 155, 164).
//!
//! Every resource is one row of `resources`: its name, the collection it lives in, a revision (the
//! etag), timestamps, and its protobuf encoding. The fields a resource can be filtered or looked up by
//! are copied to `resource_attrs` so that filters run in SQL on an index. Each service declares its
//! resources as [`Kind`]s and keeps its own rules (validation, references, invariants) in its domain
//! module; this module does the rest the same way for all of them.
//!
//! Schema ([`MIGRATIONS`], run in each service's own slice):
//! `resources(name PK, collection, revision, create_time, update_time, delete_time, body)`,
//! `resource_attrs(name, attr, value)`, and `idempotency_keys(method, request_id, request_hash, response)`,
//! which [`crate::idempotency`] reads and writes (for typed tables as well as for this store).

use pm_api::Resource;
use prost_types::FieldMask;
use sqlx::{AnyConnection, Row, any::AnyRow};

use crate::batch::{Insert, Value};
use crate::db::{Db, Migrations};
use crate::error::{ApiError, ApiResult};
use crate::idempotency::{check_request_id, remember, replay};
use crate::names::{self, NamePattern};
use crate::time::{Micros, now_micros, to_timestamp};
use crate::{fieldmask, filter, paging};

/// The store's tables, for every service that uses it (versions 1100-1199 of a slice).
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
    postgres: || sqlx::migrate!("./migrations/postgres"),
};

/// The protobuf name of an enum value (`UNIT_KIND_PROGRAM`), for attributes and filters; empty for an
/// unknown value.
pub fn enum_name<E: TryFrom<i32>>(value: i32, name: impl Fn(&E) -> &'static str) -> String {
    E::try_from(value)
        .map(|e| name(&e))
        .unwrap_or_default()
        .to_string()
}

/// A kind of resource: its name pattern and what the store indexes about it.
pub struct Kind<T> {
    /// The name pattern, e.g. `organizations/{organization}/units/{unit}`.
    pub pattern: NamePattern,
    /// The request field that holds the resource in Create and Update (`service_unit`).
    pub field: &'static str,
    /// Whether the parent lives in the same slice (and must exist there on create). False when
    /// another service owns it, as for RBAC's role bindings under Org's organizations.
    pub local_parent: bool,
    /// Fields the `filter` of List accepts (each must be produced by `attrs`).
    pub filterable: &'static [&'static str],
    /// Output-only or immutable fields beyond the common ones (never updated through a mask).
    pub protected: &'static [&'static str],
    /// The indexed attributes of a resource: filterable fields and lookup keys.
    pub attrs: fn(&T) -> Vec<(&'static str, String)>,
}

/// A resource as read from the store, with its revision.
#[derive(Debug, Clone)]
pub struct Stored<T> {
    /// The resource with its server-owned fields filled in.
    pub resource: T,
    /// Incremented on every write.
    pub revision: i64,
}

impl<T: Resource> Stored<T> {
    /// Whether the resource is soft-deleted.
    pub fn is_deleted(&self) -> bool {
        self.resource.delete_time().is_some()
    }
}

fn etag_of(revision: i64) -> String {
    format!("r{revision}")
}

fn collection_of(kind_pattern: NamePattern, name: &str) -> String {
    let parent = names::parent_of(name);
    let collection = kind_pattern.collection_id();
    if parent.is_empty() {
        collection.to_string()
    } else {
        format!("{parent}/{collection}")
    }
}

fn decode_row<T: Resource>(row: &AnyRow) -> ApiResult<Stored<T>> {
    let body: Vec<u8> = row.try_get("body")?;
    let revision: i64 = row.try_get("revision")?;
    let create: Micros = row.try_get("create_time")?;
    let update: Micros = row.try_get("update_time")?;
    let delete: Option<Micros> = row.try_get("delete_time")?;
    let name: String = row.try_get("name")?;
    let mut resource = T::decode(body.as_slice())
        .map_err(|e| ApiError::internal("decoding a stored resource", &e))?;
    resource.set_name(name);
    resource.stamp(
        etag_of(revision),
        Some(to_timestamp(create)),
        Some(to_timestamp(update)),
        delete.map(to_timestamp),
    );
    Ok(Stored { resource, revision })
}

const COLUMNS: &str = "name, revision, create_time, update_time, delete_time, body";

/// Whether `name` names a resource of type `T` (its collection id is `T::COLLECTION`). A record is
/// never decoded as another type: a request that names a patient where a unit is expected finds no
/// unit, instead of a patient's bytes read as a unit.
fn names_kind<T: Resource>(name: &str) -> bool {
    let mut segments = name.rsplit('/');
    segments.next();
    segments.next() == Some(T::COLLECTION)
}

/// Reads a resource by name, deleted or not (`None` also for a name of another type).
pub async fn get<T: Resource>(
    conn: &mut AnyConnection,
    name: &str,
) -> ApiResult<Option<Stored<T>>> {
    if !names_kind::<T>(name) {
        return Ok(None);
    }
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM resources WHERE name = $1"))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(decode_row).transpose()
}

/// Reads a resource that is not deleted.
pub async fn get_live<T: Resource>(
    conn: &mut AnyConnection,
    name: &str,
) -> ApiResult<Option<Stored<T>>> {
    Ok(get(conn, name).await?.filter(|s| !s.is_deleted()))
}

/// Whether a resource with this name exists and is not deleted (whatever its type).
pub async fn exists_live(conn: &mut AnyConnection, name: &str) -> ApiResult<bool> {
    let row = sqlx::query("SELECT 1 AS one FROM resources WHERE name = $1 AND delete_time IS NULL")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

/// The live resources of `collection` having `attr = value`.
pub async fn find_by_attr<T: Resource>(
    conn: &mut AnyConnection,
    collection: &str,
    attr: &str,
    value: &str,
) -> ApiResult<Vec<Stored<T>>> {
    let rows = sqlx::query(
        "SELECT r.name, r.revision, r.create_time, r.update_time, r.delete_time, r.body \
         FROM resource_attrs a JOIN resources r ON r.name = a.name \
         WHERE a.attr = $1 AND a.value = $2 AND r.collection = $3 AND r.delete_time IS NULL \
         ORDER BY r.name",
    )
    .bind(attr)
    .bind(value)
    .bind(collection)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// The live resources of any collection having `attr = value` (for attributes only one kind of the
/// slice has, such as a role binding's `principal` across organizations).
pub async fn find_anywhere_by_attr<T: Resource>(
    conn: &mut AnyConnection,
    attr: &str,
    value: &str,
) -> ApiResult<Vec<Stored<T>>> {
    let rows = sqlx::query(
        "SELECT r.name, r.revision, r.create_time, r.update_time, r.delete_time, r.body \
         FROM resource_attrs a JOIN resources r ON r.name = a.name \
         WHERE a.attr = $1 AND a.value = $2 AND r.delete_time IS NULL ORDER BY r.name",
    )
    .bind(attr)
    .bind(value)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// Every live resource of a collection (for small collections such as a provider's credentials).
pub async fn all_live<T: Resource>(
    conn: &mut AnyConnection,
    collection: &str,
) -> ApiResult<Vec<Stored<T>>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM resources WHERE collection = $1 AND delete_time IS NULL ORDER BY name"
    ))
    .bind(collection)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// Every live resource of several collections, in one query (ordered by name, so grouped by
/// collection).
pub async fn all_live_in<T: Resource>(
    conn: &mut AnyConnection,
    collections: &[String],
) -> ApiResult<Vec<Stored<T>>> {
    read_live(conn, &[], collections).await?.all()
}

/// Live resources of different kinds read in one query ([`read_live`]), each decoded as its kind.
pub struct LiveRows {
    /// Each row with its name and collection.
    rows: Vec<(String, String, AnyRow)>,
}

impl LiveRows {
    /// Whether the resource named `name` was read (and is live), without decoding it.
    pub fn has(&self, name: &str) -> bool {
        self.rows.iter().any(|(n, _, _)| n == name)
    }

    /// The resource named `name`, if it was read (and is live).
    pub fn named<T: Resource>(&self, name: &str) -> ApiResult<Option<Stored<T>>> {
        self.rows
            .iter()
            .find(|(n, _, _)| n == name && names_kind::<T>(n))
            .map(|(_, _, row)| decode_row(row))
            .transpose()
    }

    /// The resources read of `collection`, by name.
    pub fn in_collection<T: Resource>(&self, collection: &str) -> ApiResult<Vec<Stored<T>>> {
        self.rows
            .iter()
            .filter(|(_, c, _)| c == collection)
            .map(|(_, _, row)| decode_row(row))
            .collect()
    }

    /// Every resource read, as one kind.
    pub fn all<T: Resource>(&self) -> ApiResult<Vec<Stored<T>>> {
        self.rows
            .iter()
            .filter(|(n, _, _)| names_kind::<T>(n))
            .map(|(_, _, row)| decode_row(row))
            .collect()
    }
}

/// The live resources named in `names` and those of `collections`, in one query (by name): for a
/// read that needs a few kinds at once (a patient and its enrollments and coverage).
pub async fn read_live(
    conn: &mut AnyConnection,
    names: &[String],
    collections: &[String],
) -> ApiResult<LiveRows> {
    // Placeholders only in the SQL text: the Any driver has no array binds.
    let list = |from: usize, count: usize| {
        (from..from + count)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // One SELECT per key, joined with UNION ALL: each uses its index (an OR of the two could
    // make the planner scan the table).
    let mut selects = Vec::new();
    if !names.is_empty() {
        selects.push(format!(
            "SELECT collection, {COLUMNS} FROM resources WHERE name IN ({}) \
             AND delete_time IS NULL",
            list(1, names.len())
        ));
    }
    if !collections.is_empty() {
        selects.push(format!(
            "SELECT collection, {COLUMNS} FROM resources WHERE collection IN ({}) \
             AND delete_time IS NULL",
            list(names.len() + 1, collections.len())
        ));
    }
    if selects.is_empty() {
        return Ok(LiveRows { rows: Vec::new() });
    }
    let sql = format!("{} ORDER BY name", selects.join(" UNION ALL "));
    let mut query = sqlx::query(&sql);
    for value in names.iter().chain(collections) {
        query = query.bind(value.as_str());
    }
    let rows = query
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| Ok((row.try_get("name")?, row.try_get("collection")?, row)))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(LiveRows { rows })
}

/// Writes a resource's attribute rows again (after a new version).
async fn write_attrs<T: Resource>(
    conn: &mut AnyConnection,
    kind: &Kind<T>,
    resource: &T,
) -> ApiResult<()> {
    sqlx::query("DELETE FROM resource_attrs WHERE name = $1")
        .bind(resource.name())
        .execute(&mut *conn)
        .await?;
    if let Some(insert) = attrs_insert(kind, resource) {
        insert.execute(conn).await?;
    }
    Ok(())
}

/// A resource's attribute rows, in one statement (`None`: it has none).
fn attrs_insert<T: Resource>(kind: &Kind<T>, resource: &T) -> Option<Insert> {
    let mut attrs = (kind.attrs)(resource);
    attrs.sort();
    attrs.dedup();
    if attrs.is_empty() {
        return None;
    }
    // Placeholders only in the SQL text: `($1, $2, $3), ($1, $4, $5), ...`.
    let rows = (0..attrs.len())
        .map(|i| format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let mut values = vec![Value::from(resource.name())];
    for (attr, value) in attrs {
        values.push(attr.into());
        values.push(value.into());
    }
    Some(Insert::new(
        "resource_attrs",
        format!("INSERT INTO resource_attrs (name, attr, value) VALUES {rows}"),
        values,
    ))
}

/// Inserts a new resource (its name set); ALREADY_EXISTS if the name is taken, even by a deleted one.
pub async fn insert<T: Resource>(
    conn: &mut AnyConnection,
    kind: &Kind<T>,
    resource: T,
) -> ApiResult<T> {
    let (stored, inserts) = insert_statements(kind, resource);
    for insert in &inserts {
        insert.execute(conn).await?;
    }
    Ok(stored)
}

/// The statements that insert a new resource (its name set), and the resource as stored (etag and
/// times set): for a write that sends them with others ([`crate::batch`]). The name's primary key
/// (deleted resources keep their rows) refuses a taken name with ALREADY_EXISTS: no lookup first.
pub fn insert_statements<T: Resource>(kind: &Kind<T>, mut resource: T) -> (T, Vec<Insert>) {
    let now = now_micros();
    resource.stamp(String::new(), None, None, None);
    let name = resource.name().to_string();
    let row = Insert::new(
        "resources",
        "INSERT INTO resources (name, collection, revision, create_time, update_time, delete_time, body) \
         VALUES ($1, $2, 1, $3, $3, NULL, $4)",
        vec![
            name.as_str().into(),
            collection_of(kind.pattern, &name).into(),
            now.into(),
            resource.encode_to_vec().into(),
        ],
    )
    .refusing(move |e| {
        e.is_unique_violation().then(|| {
            ApiError::already_exists("RESOURCE_ALREADY_EXISTS", format!("{name} already exists"))
                .with_meta("resource", &name)
        })
    });
    let mut inserts = vec![row];
    inserts.extend(attrs_insert(kind, &resource));
    resource.stamp(
        etag_of(1),
        Some(to_timestamp(now)),
        Some(to_timestamp(now)),
        None,
    );
    (resource, inserts)
}

/// Writes a new version of a stored resource (bumping its revision). `revision` is the one it was
/// read at: a concurrent write in between gives ABORTED.
pub async fn replace<T: Resource>(
    conn: &mut AnyConnection,
    kind: &Kind<T>,
    revision: i64,
    mut resource: T,
    delete_time: Option<Micros>,
) -> ApiResult<T> {
    let now = now_micros();
    let create_time = resource.create_time().cloned();
    resource.stamp(String::new(), None, None, None);
    let result = sqlx::query(
        "UPDATE resources SET revision = revision + 1, update_time = $1, delete_time = $2, body = $3 \
         WHERE name = $4 AND revision = $5",
    )
    .bind(now)
    .bind(delete_time)
    .bind(resource.encode_to_vec())
    .bind(resource.name().to_string())
    .bind(revision)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() != 1 {
        return Err(ApiError::stale_etag(resource.name()));
    }
    write_attrs(conn, kind, &resource).await?;
    resource.stamp(
        etag_of(revision + 1),
        create_time,
        Some(to_timestamp(now)),
        delete_time.map(to_timestamp),
    );
    Ok(resource)
}

/// Fails with ABORTED unless `supplied` is empty or equals the stored etag.
pub fn check_etag<T: Resource>(stored: &Stored<T>, supplied: &str) -> ApiResult<()> {
    if supplied.is_empty() || supplied == etag_of(stored.revision) {
        Ok(())
    } else {
        Err(ApiError::stale_etag(stored.resource.name()))
    }
}

/// What a Create call asks for, beyond the resource itself.
pub struct CreateCall<'a> {
    /// Full gRPC method path (the idempotency key's namespace).
    pub method: &'static str,
    /// The parent resource name ("" for top-level resources).
    pub parent: &'a str,
    /// The requested id ("" to generate one).
    pub id: &'a str,
    /// The request field holding the id (`service_unit_id`), for errors.
    pub id_field: &'static str,
    /// The request's request_id ("" for none).
    pub request_id: &'a str,
    /// [`request_hash`] of the whole request.
    pub request_hash: String,
}

/// Creates a resource: parent must exist, `check` runs inside the write transaction (under the
/// organization's write lock) with the new name set, a retried request_id returns the first result.
pub async fn create<T, F>(
    db: &Db,
    kind: &Kind<T>,
    call: CreateCall<'_>,
    resource: T,
    check: F,
) -> ApiResult<T>
where
    T: Resource,
    F: AsyncFnOnce(&mut AnyConnection, &mut T) -> ApiResult<()>,
{
    create_then(db, kind, call, resource, check, async |_, _| Ok(())).await
}

/// [`create`], then `after` sees the stored resource (with its etag and times) inside the same
/// transaction: for writes that must commit together with it (an outbox event).
pub async fn create_then<T, F, A>(
    db: &Db,
    kind: &Kind<T>,
    call: CreateCall<'_>,
    mut resource: T,
    check: F,
    after: A,
) -> ApiResult<T>
where
    T: Resource,
    F: AsyncFnOnce(&mut AnyConnection, &mut T) -> ApiResult<()>,
    A: AsyncFnOnce(&mut AnyConnection, &T) -> ApiResult<()>,
{
    let name = new_name(kind, &call)?;
    let mut tx = db.write(names::organization_of(&name)).await?;
    if let Some(previous) =
        replay(tx.conn(), call.method, call.request_id, &call.request_hash).await?
    {
        return Ok(previous);
    }
    if kind.local_parent && !call.parent.is_empty() && !exists_live(tx.conn(), call.parent).await? {
        return Err(ApiError::not_found(call.parent).with_violation("parent", "does not exist"));
    }
    resource.set_name(name);
    check(tx.conn(), &mut resource).await?;
    let created = insert(tx.conn(), kind, resource).await?;
    after(tx.conn(), &created).await?;
    remember(
        tx.conn(),
        call.method,
        call.request_id,
        &call.request_hash,
        &created,
    )
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// The full name a Create call gives its resource, once its request_id, parent and id are valid.
pub fn new_name<T: Resource>(kind: &Kind<T>, call: &CreateCall<'_>) -> ApiResult<String> {
    check_request_id(call.request_id)?;
    if let Some(parent_pattern) = kind.pattern.parent() {
        parent_pattern.parse("parent", call.parent)?;
    }
    let id = names::choose_id(call.id_field, call.id)?;
    Ok(if call.parent.is_empty() {
        format!("{}/{id}", kind.pattern.collection_id())
    } else {
        format!("{}/{}/{id}", call.parent, kind.pattern.collection_id())
    })
}

/// Gets a resource by name (soft-deleted ones included); NOT_FOUND when there is none.
pub async fn get_by_name<T: Resource>(db: &Db, kind: &Kind<T>, name: &str) -> ApiResult<T> {
    kind.pattern.parse("name", name)?;
    let mut conn = db.read().await?;
    get::<T>(&mut conn, name)
        .await?
        .map(|s| s.resource)
        .ok_or_else(|| ApiError::not_found(name))
}

/// Loads the live resource `name` inside a write transaction, checking the caller's etag.
pub async fn load_for_write<T: Resource>(
    conn: &mut AnyConnection,
    name: &str,
    etag: &str,
) -> ApiResult<Stored<T>> {
    let stored = get_live::<T>(conn, name)
        .await?
        .ok_or_else(|| ApiError::not_found(name))?;
    check_etag(&stored, etag)?;
    Ok(stored)
}

/// Updates the fields of `patch` named by `mask`; `check` sees the stored and the merged resource
/// inside the write transaction and may refuse the change.
pub async fn update<T, F>(
    db: &Db,
    kind: &Kind<T>,
    patch: Option<T>,
    mask: Option<&FieldMask>,
    check: F,
) -> ApiResult<T>
where
    T: Resource,
    F: AsyncFnOnce(&mut AnyConnection, &T, &mut T) -> ApiResult<()>,
{
    let patch = patch
        .ok_or_else(|| ApiError::invalid(kind.field, "is required").because("FIELD_REQUIRED"))?;
    let name = patch.name().to_string();
    kind.pattern.parse(&format!("{}.name", kind.field), &name)?;
    let mut tx = db.write(names::organization_of(&name)).await?;
    let stored = load_for_write::<T>(tx.conn(), &name, patch.etag()).await?;
    let mut merged = fieldmask::apply(&stored.resource, &patch, mask, kind.protected, kind.field)?;
    check(tx.conn(), &stored.resource, &mut merged).await?;
    let updated = replace(tx.conn(), kind, stored.revision, merged, None).await?;
    tx.commit().await?;
    Ok(updated)
}

/// Soft-deletes a resource; `check` may refuse (for example while it has live children).
pub async fn soft_delete<T, F>(
    db: &Db,
    kind: &Kind<T>,
    name: &str,
    etag: &str,
    check: F,
) -> ApiResult<T>
where
    T: Resource,
    F: AsyncFnOnce(&mut AnyConnection, &T) -> ApiResult<()>,
{
    kind.pattern.parse("name", name)?;
    let mut tx = db.write(names::organization_of(name)).await?;
    let stored = load_for_write::<T>(tx.conn(), name, etag).await?;
    check(tx.conn(), &stored.resource).await?;
    let deleted = replace(
        tx.conn(),
        kind,
        stored.revision,
        stored.resource,
        Some(now_micros()),
    )
    .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// The query of a List call.
pub struct ListCall<'a> {
    /// The parent ("" for top-level collections).
    pub parent: &'a str,
    /// `page_size` as requested.
    pub page_size: i32,
    /// `page_token` as received.
    pub page_token: &'a str,
    /// `filter` as received.
    pub filter: &'a str,
    /// `order_by` as received.
    pub order_by: &'a str,
    /// `show_deleted`.
    pub show_deleted: bool,
    /// What the caller may see, pushed into the query; `None` for everything.
    pub scope: Option<ListScope>,
}

/// A restriction of a List to what the caller may see, evaluated in SQL.
#[derive(Debug, Clone)]
pub enum ListScope {
    /// Only these resource names.
    Names(Vec<String>),
    /// Only resources with `attr` equal to one of the values.
    Attr(&'static str, Vec<String>),
    /// Only resources with a live child in collection `<name>/<collection_id>` having every listed
    /// attribute equal to one of its values (e.g. patients with an active enrollment in some unit).
    Child(&'static str, Vec<(&'static str, Vec<String>)>),
}

/// One page of a List call.
pub struct Page<T> {
    /// The resources.
    pub items: Vec<T>,
    /// The token for the next page; empty on the last.
    pub next_page_token: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Name,
    CreateTime,
    CreateTimeDesc,
}

fn parse_order(order_by: &str) -> ApiResult<Order> {
    let normalized = order_by.split_whitespace().collect::<Vec<_>>().join(" ");
    match normalized.as_str() {
        "" | "name" | "name asc" => Ok(Order::Name),
        "create_time" | "create_time asc" => Ok(Order::CreateTime),
        "create_time desc" => Ok(Order::CreateTimeDesc),
        _ => Err(ApiError::invalid(
            "order_by",
            "must be `name`, `create_time` or `create_time desc`",
        )
        .because("ORDER_BY_INVALID")),
    }
}

/// Lists a collection, a page at a time, with the filter evaluated in SQL.
pub async fn list<T: Resource>(db: &Db, kind: &Kind<T>, call: ListCall<'_>) -> ApiResult<Page<T>> {
    if let Some(parent_pattern) = kind.pattern.parent() {
        parent_pattern.parse("parent", call.parent)?;
    }
    let page_size = paging::page_size(call.page_size)?;
    let terms = filter::parse(call.filter, kind.filterable)?;
    let order = parse_order(call.order_by)?;
    let fingerprint = paging::query_fingerprint(&[
        call.parent,
        call.filter,
        call.order_by,
        if call.show_deleted { "deleted" } else { "live" },
    ]);
    let after = paging::decode_token(call.page_token, &fingerprint)?;
    let collection = if call.parent.is_empty() {
        kind.pattern.collection_id().to_string()
    } else {
        format!("{}/{}", call.parent, kind.pattern.collection_id())
    };

    let mut sql = format!("SELECT {COLUMNS} FROM resources r WHERE collection = $1");
    let mut params: Vec<Param> = vec![Param::Text(collection)];
    let next = |params: &mut Vec<Param>, p: Param| {
        params.push(p);
        format!("${}", params.len())
    };
    if !call.show_deleted {
        sql.push_str(" AND delete_time IS NULL");
    }
    if let Some(scope) = &call.scope {
        let list = |params: &mut Vec<Param>, values: &[String]| {
            let placeholders: Vec<String> = values
                .iter()
                .map(|v| next(params, Param::Text(v.clone())))
                .collect();
            placeholders.join(", ")
        };
        let empty = match scope {
            ListScope::Names(names) | ListScope::Attr(_, names) => names.is_empty(),
            ListScope::Child(_, attrs) => attrs.iter().any(|(_, values)| values.is_empty()),
        };
        if empty {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: String::new(),
            });
        }
        match scope {
            ListScope::Names(names) => {
                sql.push_str(&format!(" AND r.name IN ({})", list(&mut params, names)))
            }
            ListScope::Attr(attr, values) => {
                let a = next(&mut params, Param::Text((*attr).to_string()));
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM resource_attrs s WHERE s.name = r.name AND s.attr = {a} AND s.value IN ({}))",
                    list(&mut params, values)
                ));
            }
            ListScope::Child(collection_id, attrs) => {
                let suffix = next(&mut params, Param::Text(format!("/{collection_id}")));
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM resources c WHERE c.collection = r.name || {suffix} AND c.delete_time IS NULL"
                ));
                for (attr, values) in attrs {
                    let a = next(&mut params, Param::Text((*attr).to_string()));
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM resource_attrs ca WHERE ca.name = c.name AND ca.attr = {a} AND ca.value IN ({}))",
                        list(&mut params, values)
                    ));
                }
                sql.push(')');
            }
        }
    }
    for term in terms {
        let a = next(&mut params, Param::Text(term.field));
        let v = next(&mut params, Param::Text(term.value));
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM resource_attrs a WHERE a.name = r.name AND a.attr = {a} AND a.value = {v})"
        ));
    }
    if let Some(key) = after {
        let bad_token = paging::invalid_token;
        match (order, key.as_slice()) {
            (Order::Name, [name]) => {
                let n = next(&mut params, Param::Text(name.clone()));
                sql.push_str(&format!(" AND name > {n}"));
            }
            (Order::CreateTime | Order::CreateTimeDesc, [time, name]) => {
                let time: i64 = time.parse().map_err(|_| bad_token())?;
                let t = next(&mut params, Param::Int(time));
                let n = next(&mut params, Param::Text(name.clone()));
                let cmp = if order == Order::CreateTime { ">" } else { "<" };
                sql.push_str(&format!(
                    " AND (create_time {cmp} {t} OR (create_time = {t} AND name {cmp} {n}))"
                ));
            }
            _ => return Err(bad_token()),
        }
    }
    sql.push_str(match order {
        Order::Name => " ORDER BY name",
        Order::CreateTime => " ORDER BY create_time, name",
        Order::CreateTimeDesc => " ORDER BY create_time DESC, name DESC",
    });
    let limit = next(&mut params, Param::Int(page_size as i64 + 1));
    sql.push_str(&format!(" LIMIT {limit}"));

    let mut query = sqlx::query(&sql);
    for param in params {
        query = match param {
            Param::Text(s) => query.bind(s),
            Param::Int(i) => query.bind(i),
        };
    }
    let mut conn = db.read().await?;
    let rows = query.fetch_all(&mut *conn).await?;
    let mut items = rows
        .iter()
        .map(decode_row::<T>)
        .collect::<ApiResult<Vec<_>>>()?;
    let more = items.len() > page_size;
    items.truncate(page_size);
    let next_page_token = match items.last() {
        Some(last) if more => {
            let name = last.resource.name().to_string();
            let key = match order {
                Order::Name => vec![name],
                Order::CreateTime | Order::CreateTimeDesc => {
                    vec![create_micros(&last.resource).to_string(), name]
                }
            };
            paging::encode_token(&fingerprint, key)
        }
        _ => String::new(),
    };
    Ok(Page {
        items: items.into_iter().map(|s| s.resource).collect(),
        next_page_token,
    })
}

enum Param {
    Text(String),
    Int(i64),
}

fn create_micros<T: Resource>(resource: &T) -> Micros {
    resource.create_time().map_or(0, crate::time::to_micros)
}

/// What a state-changing custom method (AIP-136, e.g. `DischargeEnrollment`) asks for.
pub struct VerbCall<'a> {
    /// Full gRPC method path.
    pub method: &'static str,
    /// The resource acted on.
    pub name: &'a str,
    /// The caller's etag ("" for none).
    pub etag: &'a str,
    /// The request's request_id ("" for none).
    pub request_id: &'a str,
    /// [`request_hash`] of the whole request.
    pub request_hash: String,
}

/// Runs a state change on one live resource: `change` mutates it inside the write transaction (and may
/// refuse); the new version is stored and a retried request_id returns the first result.
pub async fn transition<T, F>(
    db: &Db,
    kind: &Kind<T>,
    call: VerbCall<'_>,
    change: F,
) -> ApiResult<T>
where
    T: Resource,
    F: AsyncFnOnce(&mut AnyConnection, &mut T) -> ApiResult<()>,
{
    transition_then(db, kind, call, change, async |_, _| Ok(())).await
}

/// [`transition`], then `after` sees the stored result inside the same transaction.
pub async fn transition_then<T, F, A>(
    db: &Db,
    kind: &Kind<T>,
    call: VerbCall<'_>,
    change: F,
    after: A,
) -> ApiResult<T>
where
    T: Resource,
    F: AsyncFnOnce(&mut AnyConnection, &mut T) -> ApiResult<()>,
    A: AsyncFnOnce(&mut AnyConnection, &T) -> ApiResult<()>,
{
    check_request_id(call.request_id)?;
    kind.pattern.parse("name", call.name)?;
    let mut tx = db.write(names::organization_of(call.name)).await?;
    if let Some(previous) =
        replay(tx.conn(), call.method, call.request_id, &call.request_hash).await?
    {
        return Ok(previous);
    }
    let stored = load_for_write::<T>(tx.conn(), call.name, call.etag).await?;
    let mut resource = stored.resource;
    change(tx.conn(), &mut resource).await?;
    let changed = replace(tx.conn(), kind, stored.revision, resource, None).await?;
    after(tx.conn(), &changed).await?;
    remember(
        tx.conn(),
        call.method,
        call.request_id,
        &call.request_hash,
        &changed,
    )
    .await?;
    tx.commit().await?;
    Ok(changed)
}
