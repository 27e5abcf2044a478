//! Equality search through a protected view. `WHERE email = $1` on the view compares the
//! decrypted value, which no index can serve; when the column has a blind index, the
//! planner hook adds `email_blind_index = platform.protected_blind_index($1, id)` inside
//! the view's query (the original condition stays, so the result is exactly the same),
//! and the planner can then use the blind index's btree.

use super::protect;
use pgrx::prelude::*;
use pgrx::PgList;
use std::ffi::CStr;

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;

/// Called from `_PG_init`.
pub fn init() {
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    unsafe {
        add_blind_index_quals(parse);
        match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    }
}

unsafe fn is_a(node: *mut pg_sys::Node, tag: pg_sys::NodeTag) -> bool {
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// Below casts (a varchar view column compared as text, a `::varchar(n)` in the view).
unsafe fn strip(mut node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    unsafe {
        loop {
            if is_a(node, pg_sys::NodeTag::T_RelabelType) {
                node = (*(node as *mut pg_sys::RelabelType)).arg as *mut pg_sys::Node;
            } else if is_a(node, pg_sys::NodeTag::T_FuncExpr) {
                let f = node as *mut pg_sys::FuncExpr;
                let cast = matches!(
                    (*f).funcformat,
                    pg_sys::CoercionForm::COERCE_EXPLICIT_CAST
                        | pg_sys::CoercionForm::COERCE_IMPLICIT_CAST
                );
                let args = PgList::<pg_sys::Node>::from_pg((*f).args);
                match (cast, args.get_ptr(0)) {
                    (true, Some(arg)) => node = arg,
                    _ => return node,
                }
            } else {
                return node;
            }
        }
    }
}

unsafe fn add_blind_index_quals(q: *mut pg_sys::Query) {
    unsafe {
        if q.is_null() {
            return;
        }
        let ctes = PgList::<pg_sys::CommonTableExpr>::from_pg((*q).cteList);
        for cte in ctes.iter_ptr() {
            let inner = (*cte).ctequery;
            if is_a(inner, pg_sys::NodeTag::T_Query) {
                add_blind_index_quals(inner as *mut pg_sys::Query);
            }
        }
        let rtable = PgList::<pg_sys::RangeTblEntry>::from_pg((*q).rtable);
        for rte in rtable.iter_ptr() {
            if (*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY {
                add_blind_index_quals((*rte).subquery);
            }
        }
        if (*q).jointree.is_null() {
            return;
        }
        let quals = (*(*q).jointree).quals;
        let conjuncts: Vec<*mut pg_sys::Node> = if is_a(quals, pg_sys::NodeTag::T_BoolExpr)
            && (*(quals as *mut pg_sys::BoolExpr)).boolop == pg_sys::BoolExprType::AND_EXPR
        {
            PgList::<pg_sys::Node>::from_pg((*(quals as *mut pg_sys::BoolExpr)).args)
                .iter_ptr()
                .collect()
        } else if quals.is_null() {
            Vec::new()
        } else {
            vec![quals]
        };
        for c in conjuncts {
            if !is_a(c, pg_sys::NodeTag::T_OpExpr) {
                continue;
            }
            let op = c as *mut pg_sys::OpExpr;
            if (*op).opno != pg_sys::Oid::from(pg_sys::TextEqualOperator) {
                continue;
            }
            let args = PgList::<pg_sys::Node>::from_pg((*op).args);
            let (Some(a), Some(b)) = (args.get_ptr(0), args.get_ptr(1)) else {
                continue;
            };
            for (side, other) in [(a, b), (b, a)] {
                if add_for(&rtable, strip(side), other) {
                    break;
                }
            }
        }
    }
}

/// `var = value` where `var` is a view column over `reveal_column` of a blind-indexed
/// column and `value` does not depend on the row: adds the blind index condition.
unsafe fn add_for(
    rtable: &PgList<pg_sys::RangeTblEntry>,
    var: *mut pg_sys::Node,
    value: *mut pg_sys::Node,
) -> bool {
    unsafe {
        if !is_a(var, pg_sys::NodeTag::T_Var) {
            return false;
        }
        let v = var as *mut pg_sys::Var;
        if (*v).varlevelsup != 0 || (*v).varno < 1 {
            return false;
        }
        let Some(rte) = rtable.get_ptr((*v).varno as usize - 1) else {
            return false;
        };
        if (*rte).rtekind != pg_sys::RTEKind::RTE_SUBQUERY || (*rte).subquery.is_null() {
            return false;
        }
        let sub = (*rte).subquery;
        let tle = pg_sys::get_tle_by_resno((*sub).targetList, (*v).varattno);
        if tle.is_null() {
            return false;
        }
        let expr = strip((*tle).expr as *mut pg_sys::Node);
        if !is_a(expr, pg_sys::NodeTag::T_FuncExpr) {
            return false;
        }
        let f = expr as *mut pg_sys::FuncExpr;
        if !is_reveal_column((*f).funcid) {
            return false;
        }
        let fargs = PgList::<pg_sys::Node>::from_pg((*f).args);
        let (Some(ct), Some(id)) = (fargs.get_ptr(0), fargs.get_ptr(1)) else {
            return false;
        };
        // The ciphertext column is of domain platform.ciphertext: a RelabelType to bytea.
        let ct = strip(ct);
        if !is_a(ct, pg_sys::NodeTag::T_Var) || !is_a(id, pg_sys::NodeTag::T_Const) {
            return false;
        }
        let id = id as *mut pg_sys::Const;
        if (*id).constisnull {
            return false;
        }
        let column_id = (*id).constvalue.value() as i32;
        if pg_sys::contain_var_clause(value)
            || pg_sys::contain_volatile_functions(value)
            || pg_sys::contain_subplans(value)
        {
            return false;
        }
        let Some(p) = protect::registered(column_id) else {
            return false;
        };
        if !p.blind_index {
            return false;
        }
        let ct = ct as *mut pg_sys::Var;
        let sub_rtable = PgList::<pg_sys::RangeTblEntry>::from_pg((*sub).rtable);
        let Some(base) = sub_rtable.get_ptr((*ct).varno as usize - 1) else {
            return false;
        };
        if (*base).rtekind != pg_sys::RTEKind::RTE_RELATION || (*base).relid != p.table {
            return false;
        }
        let Ok(blind_name) = std::ffi::CString::new(format!("{}_blind_index", p.column)) else {
            return false;
        };
        let attnum = pg_sys::get_attnum(p.table, blind_name.as_ptr());
        let Some(function) = protected_blind_index() else {
            return false;
        };
        if attnum <= 0 {
            return false;
        }
        let blind_var = pg_sys::makeVar(
            (*ct).varno,
            attnum,
            pg_sys::BYTEAOID,
            -1,
            pg_sys::InvalidOid,
            0,
        );
        let mut call_args = PgList::<pg_sys::Node>::new();
        call_args.push(pg_sys::copyObjectImpl(value as *const _) as *mut pg_sys::Node);
        call_args.push(pg_sys::copyObjectImpl(id as *const _) as *mut pg_sys::Node);
        let call = pg_sys::makeFuncExpr(
            function,
            pg_sys::BYTEAOID,
            call_args.into_pg(),
            pg_sys::InvalidOid,
            pg_sys::DEFAULT_COLLATION_OID,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        let qual = pg_sys::make_opclause(
            pg_sys::Oid::from(pg_sys::ByteaEqualOperator),
            pg_sys::BOOLOID,
            false,
            blind_var as *mut pg_sys::Expr,
            call as *mut pg_sys::Expr,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
        );
        (*(*sub).jointree).quals =
            pg_sys::make_and_qual((*(*sub).jointree).quals, qual as *mut pg_sys::Node);
        true
    }
}

unsafe fn is_reveal_column(funcid: pg_sys::Oid) -> bool {
    unsafe {
        let name = pg_sys::get_func_name(funcid);
        if name.is_null() || CStr::from_ptr(name).to_bytes() != b"reveal_column" {
            return false;
        }
        let schema = pg_sys::get_namespace_name(pg_sys::get_func_namespace(funcid));
        !schema.is_null() && CStr::from_ptr(schema).to_bytes() == b"platform"
    }
}

/// The oid of `platform.protected_blind_index(text, integer)`.
fn protected_blind_index() -> Option<pg_sys::Oid> {
    crate::sql::read::<pg_sys::Oid>(
        "SELECT to_regprocedure('platform.protected_blind_index(text,integer)')::oid",
        &[],
    )
}
