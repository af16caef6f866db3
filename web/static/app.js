// GOV.UK Frontend's components (error summary focus, notification banners, radios...).
// A module file, not an inline script, so the Content-Security-Policy needs no exception.
import { initAll } from './govuk/govuk-frontend.min.js'

initAll()
