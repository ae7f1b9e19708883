package pgstore_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/fluxlimiter/flux/store/pgstore"
	"github.com/fluxlimiter/flux/store/storetest"
)

// FuzzCheckGCRA drives the SQL statement from arbitrary stored TATs and
// times over the whole bigint range and compares every decision and stored
// TAT with algorithm.GCRA (storetest.FuzzGCRA).
func FuzzCheckGCRA(f *testing.F) {
	pool := newPool(f)
	name := schema(f, pool)
	s := newStore(f, pool, pgstore.Options{Schema: name})
	table := pgx.Identifier{name, "gcra"}.Sanitize()
	storetest.FuzzGCRA(f, s,
		func(t *testing.T, tat int64, fresh bool) error {
			if fresh {
				_, err := pool.Exec(t.Context(), `DELETE FROM `+table+` WHERE limiter = 'l'`)
				return err
			}
			_, err := pool.Exec(t.Context(), `INSERT INTO `+table+` (limiter, key, tat) VALUES ('l', 'fuzz', $1)
				ON CONFLICT (limiter, key) DO UPDATE SET tat = excluded.tat`, tat)
			return err
		},
		func(t *testing.T) (int64, error) {
			var stored int64
			err := pool.QueryRow(t.Context(), `SELECT tat FROM `+table+` WHERE limiter = 'l' AND key = 'fuzz'`).Scan(&stored)
			return stored, err
		})
}
