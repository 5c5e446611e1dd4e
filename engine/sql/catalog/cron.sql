-- pgdurable catalog: the cron expressions of df.wait_for_schedule, checked at build time
-- as pg_durable's cron crate parses them.

-- Cron month and day names (pg_durable's cron crate: case-insensitive, short or long,
-- Sunday = 1). NULL when `name` is not one.
CREATE OR REPLACE FUNCTION df._cron_name_ordinal(unit text, name text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE unit
    WHEN 'Months' THEN CASE lower(name)
        WHEN 'jan' THEN 1 WHEN 'january' THEN 1 WHEN 'feb' THEN 2 WHEN 'february' THEN 2
        WHEN 'mar' THEN 3 WHEN 'march' THEN 3 WHEN 'apr' THEN 4 WHEN 'april' THEN 4
        WHEN 'may' THEN 5 WHEN 'jun' THEN 6 WHEN 'june' THEN 6 WHEN 'jul' THEN 7
        WHEN 'july' THEN 7 WHEN 'aug' THEN 8 WHEN 'august' THEN 8 WHEN 'sep' THEN 9
        WHEN 'september' THEN 9 WHEN 'oct' THEN 10 WHEN 'october' THEN 10
        WHEN 'nov' THEN 11 WHEN 'november' THEN 11 WHEN 'dec' THEN 12
        WHEN 'december' THEN 12 END
    WHEN 'Days of Week' THEN CASE lower(name)
        WHEN 'sun' THEN 1 WHEN 'sunday' THEN 1 WHEN 'mon' THEN 2 WHEN 'monday' THEN 2
        WHEN 'tue' THEN 3 WHEN 'tues' THEN 3 WHEN 'tuesday' THEN 3 WHEN 'wed' THEN 4
        WHEN 'wednesday' THEN 4 WHEN 'thu' THEN 5 WHEN 'thurs' THEN 5
        WHEN 'thursday' THEN 5 WHEN 'fri' THEN 6 WHEN 'friday' THEN 6 WHEN 'sat' THEN 7
        WHEN 'saturday' THEN 7 END
END;

-- The ordinal a cron value token stands for, or the reason it is not acceptable.
-- Returns (ordinal, NULL) or (NULL, reason).
CREATE OR REPLACE FUNCTION df._cron_value(token text, unit text, lo integer, hi integer,
                               OUT ordinal integer, OUT reason text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF token ~ '^[0-9]+$' THEN
        IF length(token) > 9 OR token::integer > hi THEN
            reason := format('%s must be less than or equal to %s. (''%s'' specified.)',
                             unit, hi, token);
        ELSIF token::integer < lo THEN
            reason := format('%s must be greater than or equal to %s. (''%s'' specified.)',
                             unit, lo, token);
        ELSE
            ordinal := token::integer;
        END IF;
    ELSIF token ~ '^[A-Za-z]+$' THEN
        IF unit NOT IN ('Months', 'Days of Week') THEN
            reason := format('The ''%s'' field does not support using names. ''%s'' specified.',
                             unit, token);
        ELSE
            ordinal := df._cron_name_ordinal(unit, token);
            IF ordinal IS NULL THEN
                reason := CASE unit WHEN 'Months'
                    THEN format('''%s'' is not a valid month name.', token)
                    ELSE format('''%s'' is not a valid day of the week.', token) END;
            END IF;
        END IF;
    ELSE
        reason := format('cannot parse ''%s'' in the %s field', token, unit);
    END IF;
END;
$$;

-- Why one cron field is invalid, or NULL. Grammar of the cron crate: a comma list of items;
-- an item is `*`, `?` (day fields only), N, N-M, a name, name-name, optionally followed
-- by `/step` (not after a lone name); N/step means N through the field's maximum.
CREATE OR REPLACE FUNCTION df._cron_field_error(field text, unit text, lo integer, hi integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    item text;
    base text;
    step text;
    bounds text[];
    low_end record;
    high_end record;
BEGIN
    FOREACH item IN ARRAY string_to_array(field, ',') LOOP
        IF item !~ '^[^/]+(/[^/]*)?$' THEN
            RETURN format('cannot parse ''%s'' in the %s field', item, unit);
        END IF;
        base := split_part(item, '/', 1);
        step := nullif(substr(item, length(base) + 1), '');
        IF step IS NOT NULL THEN
            step := substr(step, 2);
            IF step !~ '^[0-9]+$' THEN
                RETURN format('cannot parse ''%s'' in the %s field', item, unit);
            ELSIF step ~ '^0+$' THEN
                RETURN 'range step cannot be zero';
            ELSIF length(step) > 9 OR step::integer > hi THEN
                RETURN format('%s step must be between 1 and %s. (''%s'' specified.)',
                              unit, hi, step);
            ELSIF base ~ '^[A-Za-z]+$' THEN
                RETURN format('cannot parse ''%s'' in the %s field', item, unit);
            END IF;
        END IF;
        CONTINUE WHEN base = '*'
            OR (base = '?' AND unit IN ('Days of Month', 'Days of Week'));
        bounds := string_to_array(base, '-');
        IF cardinality(bounds) > 2 OR '' = ANY (bounds)
           OR (cardinality(bounds) = 2
               AND NOT (base ~ '^[0-9]+-[0-9]+$' OR base ~ '^[A-Za-z]+-[A-Za-z]+$')) THEN
            RETURN format('cannot parse ''%s'' in the %s field', item, unit);
        END IF;
        low_end := df._cron_value(bounds[1], unit, lo, hi);
        IF cardinality(bounds) = 1 THEN
            IF low_end.reason IS NOT NULL THEN
                RETURN low_end.reason;
            END IF;
            CONTINUE;
        END IF;
        high_end := df._cron_value(bounds[2], unit, lo, hi);
        IF base ~ '^[A-Za-z]' THEN
            -- Names must exist; then the range must be in order.
            IF coalesce(low_end.reason, high_end.reason) IS NOT NULL THEN
                RETURN coalesce(low_end.reason, high_end.reason);
            ELSIF low_end.ordinal > high_end.ordinal THEN
                RETURN format('Invalid named range for %s: %s', unit, base);
            END IF;
        ELSIF low_end.reason IS NOT NULL OR high_end.reason IS NOT NULL
              OR low_end.ordinal > high_end.ordinal THEN
            RETURN format('Invalid range for %s: %s', unit, base);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- Why a pg_durable cron expression is invalid, or NULL when it is valid. pg_durable parses
-- '0 ' || expr with the Rust cron crate, so 5 fields are `min hour dom month dow` (second 0)
-- and 6 fields add a year; day-of-week numbers are 1-7 with 1 = Sunday, as in that crate.
CREATE OR REPLACE FUNCTION df._cron_error(cron_expr text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    fields text[] := regexp_split_to_array(
        regexp_replace(cron_expr, '^[[:space:]]+|[[:space:]]+$', '', 'g'), '[[:space:]]+');
    units text[] := ARRAY['Minutes', 'Hours', 'Days of Month', 'Months', 'Days of Week',
                          'Years'];
    lows integer[] := ARRAY[0, 0, 1, 1, 1, 1970];
    highs integer[] := ARRAY[59, 23, 31, 12, 7, 2100];
    reason text;
BEGIN
    IF fields = ARRAY[''] THEN
        fields := '{}';
    END IF;
    IF cardinality(fields) NOT IN (5, 6) THEN
        RETURN format('expected 5 fields (minute hour day-of-month month day-of-week) '
                      'or 6 (with a year), found %s', cardinality(fields));
    END IF;
    FOR i IN 1 .. cardinality(fields) LOOP
        reason := df._cron_field_error(fields[i], units[i], lows[i], highs[i]);
        IF reason IS NOT NULL THEN
            RETURN reason;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
