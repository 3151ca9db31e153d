package store

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/errdefs"
)

// PostgreSQL refuses text that is not valid UTF-8, and NUL bytes
// (SQLSTATE 22021, character_not_in_repertoire), where SQLite stores or
// compares them as given. Such text comes from a request (a path id
// "a%00b" or "%ff", a filter, a JSON string "a\u0000b"), so the refusal is
// the caller's bad input: invalid argument (400 in every API), not a
// database failure (500). Registered after every kind of statement.
const pgInvalidText = "22021"

func registerPGInvalidText(db *gorm.DB) error {
	cb := db.Callback()
	const name = "capsule:pg-invalid-text"
	for _, err := range []error{
		cb.Create().After("gorm:create").Register(name, pgInvalidTextIsBadInput),
		cb.Query().After("gorm:query").Register(name, pgInvalidTextIsBadInput),
		cb.Update().After("gorm:update").Register(name, pgInvalidTextIsBadInput),
		cb.Delete().After("gorm:delete").Register(name, pgInvalidTextIsBadInput),
		cb.Row().After("gorm:row").Register(name, pgInvalidTextIsBadInput),
		cb.Raw().After("gorm:raw").Register(name, pgInvalidTextIsBadInput),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

func pgInvalidTextIsBadInput(db *gorm.DB) {
	var pgErr *pgconn.PgError
	if db.Error == nil || !errors.As(db.Error, &pgErr) || pgErr.Code != pgInvalidText {
		return
	}
	// Replace, not add: gorm's AddError would join the two and keep the
	// unclassified one outermost.
	db.Error = errdefs.Wrap(db.Error, errdefs.ErrInvalidArgument, "Invalid input: text with a NUL byte or invalid UTF-8.")
}
