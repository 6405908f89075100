/**
 * The credentials of this browser tab: the API key (and the admin token, for the operator views), kept in
 * sessionStorage, so they go when the tab closes and no other tab or site reads them.
 */
const KEY = 'media-console:api-key'
const ADMIN = 'media-console:admin-token'
/** Stands for "no key needed" (an API run with AUTH=none). */
export const NO_KEY = ''

export const session = {
  key: () => sessionStorage.getItem(KEY),
  setKey: (key: string) => sessionStorage.setItem(KEY, key),
  adminToken: () => sessionStorage.getItem(ADMIN),
  setAdminToken: (token: string | null) =>
    token === null ? sessionStorage.removeItem(ADMIN) : sessionStorage.setItem(ADMIN, token),
  clear() {
    sessionStorage.removeItem(KEY)
    sessionStorage.removeItem(ADMIN)
  },
}

/** The Authorization header of the API key, if there is one. */
export function keyHeaders(): Record<string, string> {
  const key = session.key()
  return key ? { authorization: `Bearer ${key}` } : {}
}
