//! Statements with a variable number of bound values (batches, IN lists, VALUES lists), built as
//! sqlx's `QueryBuilder` builds them: text is pushed, values are bound where they appear, and the
//! builder writes each placeholder.
//!
//! Not `QueryBuilder<Any>` itself: through the `Any` driver it writes `?` for every placeholder
//! whatever the backend, which PostgreSQL refuses (sqlx issue 3000, open in 0.8). This one writes
//! the dialect's own: `$1…$n` for PostgreSQL, and anonymous `?`s for SQLite, which resolves named
//! placeholders by a linear search, so a batch's ~2,800 `$N`s cost quadratic time at bind
//! (measured: `sqlite3_bind_parameter_name` and its string compares were 9 % of the node's CPU at
//! saturation). A statement built here binds every value through the builder: mixing in a
//! hand-written `$1` would mean something else to each dialect.

use std::fmt::Write as _;

use sqlx::any::{Any, AnyArguments};
use sqlx::error::BoxDynError;
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Arguments, Encode, FromRow, Type};

use super::Dialect;

pub struct Sql<'q> {
    text: String,
    args: AnyArguments<'q>,
    bound: usize,
    dialect: Dialect,
    /// The first value that could not be encoded: the statement then fails when run.
    failed: Option<BoxDynError>,
}

impl<'q> Sql<'q> {
    pub fn new(dialect: Dialect, text: impl Into<String>) -> Self {
        Sql { text: text.into(), args: AnyArguments::default(), bound: 0, dialect, failed: None }
    }

    pub fn push(&mut self, text: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.text, "{text}");
        self
    }

    /// Binds a value here, writing its placeholder.
    pub fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        self.bound += 1;
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                let _ = write!(self.text, "${}", self.bound);
            }
        }
        if let Err(e) = self.args.add(value)
            && self.failed.is_none()
        {
            self.failed = Some(e);
        }
        self
    }

    /// `(…), (…), …`: one parenthesised tuple per item, its values bound by `row`.
    pub fn push_tuples<I>(&mut self, items: I, mut row: impl FnMut(&mut Separated<'_, 'q>, I::Item)) -> &mut Self
    where
        I: IntoIterator,
    {
        for (n, item) in items.into_iter().enumerate() {
            self.push(if n == 0 { "(" } else { ", (" });
            row(&mut Separated { sql: self, first: true }, item);
            self.push(")");
        }
        self
    }

    /// `a, b, …`: each value bound, separated by commas (an IN list's inside).
    pub fn push_list<T, I>(&mut self, values: I) -> &mut Self
    where
        I: IntoIterator<Item = T>,
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        let mut list = Separated { sql: self, first: true };
        for v in values {
            list.push_bind(v);
        }
        self
    }

    /// The statement's text as built so far.
    #[cfg(test)]
    pub fn sql(&self) -> &str {
        &self.text
    }

    /// The values bound so far (taken: build once); a value that could not be encoded fails here.
    fn arguments(&mut self) -> Result<AnyArguments<'q>, sqlx::Error> {
        match self.failed.take() {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok(std::mem::take(&mut self.args)),
        }
    }

    pub fn build(&mut self) -> Result<Query<'_, Any, AnyArguments<'_>>, sqlx::Error> {
        let args = self.arguments()?;
        Ok(sqlx::query_with(&self.text, args))
    }

    pub fn build_as<O>(&mut self) -> Result<QueryAs<'_, Any, O, AnyArguments<'_>>, sqlx::Error>
    where
        O: for<'r> FromRow<'r, sqlx::any::AnyRow>,
    {
        let args = self.arguments()?;
        Ok(sqlx::query_as_with(&self.text, args))
    }

    pub fn build_scalar<O>(&mut self) -> Result<QueryScalar<'_, Any, O, AnyArguments<'_>>, sqlx::Error>
    where
        (O,): for<'r> FromRow<'r, sqlx::any::AnyRow>,
    {
        let args = self.arguments()?;
        Ok(sqlx::query_scalar_with(&self.text, args))
    }
}

/// Values of one tuple or list, comma-separated.
pub struct Separated<'b, 'q> {
    sql: &'b mut Sql<'q>,
    first: bool,
}

impl<'q> Separated<'_, 'q> {
    pub fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        if !std::mem::replace(&mut self.first, false) {
            self.sql.push(", ");
        }
        self.sql.push_bind(value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{Dialect, Sql};

    fn tuples(dialect: Dialect) -> String {
        let mut sql = Sql::new(dialect, "SELECT 1 FROM t WHERE (a, b) IN (");
        sql.push_tuples([("x", 1_i64), ("y", 2)], |row, (a, b)| {
            row.push_bind(a).push_bind(b);
        });
        sql.push(") AND c IN (").push_list([7_i64, 8]).push(")");
        sql.sql().to_string()
    }

    #[test]
    fn postgres_placeholders_are_numbered_across_the_whole_statement() {
        assert_eq!(tuples(Dialect::Postgres), "SELECT 1 FROM t WHERE (a, b) IN (($1, $2), ($3, $4)) AND c IN ($5, $6)");
    }

    #[test]
    fn sqlite_placeholders_are_anonymous() {
        assert_eq!(tuples(Dialect::Sqlite), "SELECT 1 FROM t WHERE (a, b) IN ((?, ?), (?, ?)) AND c IN (?, ?)");
    }
}
